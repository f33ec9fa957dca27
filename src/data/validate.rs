//! The fast pass over the whole CSV before the model loads: counts rows and collects the first problems.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;

use foldhash::fast::FixedState;

use anyhow::Result;

use crate::config::{ColumnNames, DataSource, Shard};
use crate::data::reader::{Record, RecordReader, RowOutcome, RowProblem, RowRules};
use crate::error::Failure;

/// How many problems a failing validation lists.
pub const PROBLEMS_SHOWN: usize = 10;

#[derive(Debug, Clone, Default)]
pub struct DataSummary {
    pub rows_total: u64,
    pub rows_valid: u64,
    /// Valid rows in the shard being run (all of them without --shard): the rows a run will score or embed.
    pub rows_valid_in_shard: u64,
    pub rows_invalid: u64,
    pub rows_truncated: u64,
    pub rows_labeled: u64,
    /// Valid rows labeled 1 (so a trainer can check for both classes before the model loads).
    pub rows_positive: u64,
    pub has_label_column: bool,
    pub has_id_column: bool,
    /// The first problems found, in file order.
    pub problems: Vec<RowProblem>,
    /// Valid rows holding an alignment gap ('-' or '.') in the residues scored.
    pub rows_with_gaps: u64,
    /// Where the first of them has its first gap.
    pub first_gap: Option<GapSite>,
    /// The line of the first valid row cut to --max-residues.
    pub first_truncated_line: Option<u64>,
    /// The residue limit the rows were read under.
    pub max_residues: usize,
    /// Valid rows whose id an earlier valid row already has (empty ids aside).
    pub rows_with_repeated_id: u64,
    /// The first of them: the id and the line.
    pub first_repeated_id: Option<(String, u64)>,
    /// Valid rows whose residues, as scored, an earlier valid row already has.
    pub rows_with_repeated_sequence: u64,
    /// The line of the first of them.
    pub first_repeated_sequence_line: Option<u64>,
    /// Distinct sequences labeled 0 on one row and 1 on another.
    pub sequences_with_both_labels: u64,
    /// The line where the first of them meets its other label.
    pub first_both_labels_line: Option<u64>,
}

/// How many distinct ids and sequences [`scan`] remembers, so a file of tens of millions of rows keeps the
/// pass's memory bounded; later rows are still compared with the first this many. 7/8 of 2^19: the most
/// that 2^19-slot tables hold before they would grow to 2^20 (measured: the pass's peak RSS 10 MB above the
/// same pass without the check on 141,021 rows, 18 MB on 1.2 million; the tables are freed when it ends).
pub const REPEATS_TRACKED: usize = (1 << 19) / 8 * 7;

/// Repeated ids and sequences, found by 64-bit hashes (a chance collision among half a million rows is
/// about one in a hundred million).
#[derive(Default)]
struct Repeats {
    ids: HashSet<u64, FixedState>,
    /// Per sequence: the label first seen (0 or 1), [`UNLABELED`], or [`BOTH_LABELS`] once counted.
    sequences: HashMap<u64, u8, FixedState>,
}

const UNLABELED: u8 = 2;
const BOTH_LABELS: u8 = 3;

fn hash_of(bytes: &[u8]) -> u64 {
    FixedState::with_seed(0).hash_one(bytes)
}

impl Repeats {
    fn see(&mut self, record: &Record, summary: &mut DataSummary) {
        if let Some(id) = record.id.as_deref().filter(|id| !id.is_empty()) {
            let hash = hash_of(id.as_bytes());
            if self.ids.contains(&hash) {
                summary.rows_with_repeated_id += 1;
                if summary.first_repeated_id.is_none() {
                    summary.first_repeated_id = Some((id.to_string(), record.line));
                }
            } else if self.ids.len() < REPEATS_TRACKED {
                self.ids.insert(hash);
            }
        }
        let label = record.label.unwrap_or(UNLABELED);
        let hash = hash_of(&record.residues);
        // Not `entry`: on a full table it reserves a slot for the key it does not find, doubling the table
        // past its ceiling (30 MB instead of 13 on 1.2 million rows).
        let tracked = self.sequences.len();
        match self.sequences.get_mut(&hash) {
            Some(first) => {
                summary.rows_with_repeated_sequence += 1;
                summary
                    .first_repeated_sequence_line
                    .get_or_insert(record.line);
                if *first == UNLABELED {
                    *first = label;
                } else if *first != BOTH_LABELS && label != UNLABELED && label != *first {
                    *first = BOTH_LABELS;
                    summary.sequences_with_both_labels += 1;
                    summary.first_both_labels_line.get_or_insert(record.line);
                }
            }
            None if tracked < REPEATS_TRACKED => {
                self.sequences.insert(hash, label);
            }
            None => {}
        }
    }
}

/// A character in the sequence column, located as a row problem is.
#[derive(Debug, Clone, PartialEq)]
pub struct GapSite {
    pub line: u64,
    pub column: String,
    /// 1-based field number in the row.
    pub field: usize,
    /// 1-based character position inside the field.
    pub position: usize,
}

/// Reads every row once without tokenizing anything into batches.
pub fn scan(
    source: &DataSource,
    columns: &ColumnNames,
    rules: RowRules,
    shard: Shard,
) -> Result<DataSummary> {
    let mut reader = RecordReader::open(source, columns, rules, None)?;
    let mut summary = DataSummary {
        has_label_column: reader.layout().label.is_some(),
        has_id_column: reader.layout().id.is_some(),
        max_residues: rules.max_residues,
        ..Default::default()
    };
    let mut repeats = Repeats::default();
    while let Some(outcome) = reader.next_row()? {
        summary.rows_total += 1;
        match outcome {
            RowOutcome::Valid(record) => {
                repeats.see(&record, &mut summary);
                summary.rows_valid += 1;
                summary.rows_valid_in_shard += u64::from(shard.contains(record.row));
                summary.rows_truncated += u64::from(record.truncated);
                if record.truncated && summary.first_truncated_line.is_none() {
                    summary.first_truncated_line = Some(record.line);
                }
                summary.rows_labeled += u64::from(record.label.is_some());
                summary.rows_positive += u64::from(record.label == Some(1));
                if let Some(position) = record.gap_at {
                    summary.rows_with_gaps += 1;
                    if summary.first_gap.is_none() {
                        let layout = reader.layout();
                        summary.first_gap = Some(GapSite {
                            line: record.line,
                            column: layout.headers[layout.sequence].clone(),
                            field: layout.sequence + 1,
                            position,
                        });
                    }
                }
            }
            RowOutcome::Invalid(problem) => {
                summary.rows_invalid += 1;
                if summary.problems.len() < PROBLEMS_SHOWN {
                    summary.problems.push(problem);
                }
            }
        }
    }
    if summary.rows_total == 0 {
        return Err(Failure::input(format!(
            "{}: the header has no data rows under it\n  fix: add one row per sequence",
            reader.name()
        ))
        .into());
    }
    Ok(summary)
}

/// The warning for rows with alignment gaps, when there are any. ESM-2 and ESM-1v learned from unaligned
/// UniRef sequences: a '-' or '.' is a token of its own to them, so an IMGT- or AHo-aligned antibody is
/// embedded as a different, longer protein, and nothing else would tell the user.
pub fn gap_warning(summary: &DataSummary, name: &str) -> Option<String> {
    let site = summary.first_gap.as_ref()?;
    Some(format!(
        "warning: {name}: {} of {} rows hold alignment gaps ('-' or '.'), the first at line {}, column {} (field {}, character {}); \
the model reads each gap as a token, so a gapped sequence is scored as a different protein from the antibody itself\n  \
fix: score the sequences without gaps (delete every '-' and '.' from the sequence column), unless the model was trained on aligned sequences",
        summary.rows_with_gaps, summary.rows_total, site.line, site.column, site.field, site.position
    ))
}

/// Every warning the scan has for the user (gaps, truncation, repeated ids, a sequence under both labels), in
/// the order they are printed. `row_list` is the command's file with one line per row, where it writes one.
pub fn warnings(summary: &DataSummary, name: &str, row_list: Option<&str>) -> Vec<String> {
    [
        gap_warning(summary, name),
        truncation_warning(summary, name),
        repeated_id_warning(summary, name, row_list),
        both_labels_warning(summary, name),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The warning for rows cut to the residue limit, when there are any: a cut antibody is scored on part of
/// its sequence, which the report counts but a console run would otherwise not mention.
pub fn truncation_warning(summary: &DataSummary, name: &str) -> Option<String> {
    let line = summary.first_truncated_line?;
    Some(format!(
        "warning: {name}: {} of {} rows are longer than {} residues and are scored on their first {} only, the first at line {line}\n  \
fix: raise --max-residues (up to the model's limit), or pass --no-truncate to refuse such rows",
        summary.rows_truncated, summary.rows_total, summary.max_residues, summary.max_residues
    ))
}

/// The warning for ids used by more than one row: a user joining results back to the data by id would pair
/// a row with its namesake's. `row_list`: the command's file with one line per row (none for `fit`).
pub fn repeated_id_warning(
    summary: &DataSummary,
    name: &str,
    row_list: Option<&str>,
) -> Option<String> {
    let (id, line) = summary.first_repeated_id.as_ref()?;
    let join = match row_list {
        Some(list) => format!(
            "; {list} has one line per row with its 0-based `row` number, so join it to the data by `row`, not by `id`"
        ),
        None => String::new(),
    };
    Some(format!(
        "warning: {name}: {} an id that an earlier row has, the first `{}` at line {line}{join}\n  \
fix: give every row an id of its own",
        rows_that(summary.rows_with_repeated_id, "reuses", "reuse"),
        crate::error::quoted(id)
    ))
}

/// The warning for sequences labeled both 0 and 1: the model gives every copy the same probability, so one of
/// the labels counts as an error whatever the model, and in training the copies pull the fit both ways.
pub fn both_labels_warning(summary: &DataSummary, name: &str) -> Option<String> {
    let line = summary.first_both_labels_line?;
    Some(format!(
        "warning: {name}: {} labeled 0 on one row and 1 on another, the first at line {line}; each copy \
gets the same embedding and probability, so one of its labels counts as an error whatever the model\n  \
fix: settle each such sequence's label, or drop its rows",
        match summary.sequences_with_both_labels {
            1 => "1 sequence is".to_string(),
            n => format!("{n} sequences are"),
        }
    ))
}

/// The warning `fit` gives for repeated sequences when it cross-validates: copies of one sequence can fall
/// in a training fold and its held-out fold, so the held-out metrics partly measure recall of the training set.
pub fn repeated_sequence_warning(summary: &DataSummary, name: &str) -> Option<String> {
    let line = summary.first_repeated_sequence_line?;
    Some(format!(
        "warning: {name}: {} the sequence of an earlier row, the first at line {line}; cross-validation can \
put copies of one sequence on both sides of a fold, which makes the cross-validated metrics look better than \
they will be on new antibodies\n  fix: keep one row per sequence before fitting",
        rows_that(summary.rows_with_repeated_sequence, "repeats", "repeat")
    ))
}

/// "1 row reuses" / "3 rows reuse".
fn rows_that(count: u64, singular: &str, plural: &str) -> String {
    match count {
        1 => format!("1 row {singular}"),
        n => format!("{n} rows {plural}"),
    }
}

/// An error listing the first problems, when there are any.
pub fn require_all_valid(summary: &DataSummary, name: &str) -> Result<()> {
    if summary.rows_invalid == 0 {
        return Ok(());
    }
    let mut message = format!(
        "{name}: {} of {} rows are invalid; stopped before the model loaded.\n",
        summary.rows_invalid, summary.rows_total
    );
    for problem in &summary.problems {
        message.push_str(&format!("  {name}: {problem}\n"));
    }
    if summary.rows_invalid as usize > summary.problems.len() {
        message.push_str(&format!(
            "  ... and {} more\n",
            summary.rows_invalid as usize - summary.problems.len()
        ));
    }
    message.push_str("  fix: correct the rows above");
    // The rows this run (this shard, with --shard) would go on with.
    if summary.rows_valid_in_shard > 0 {
        message.push_str(&format!(
            ", or pass --on-invalid skip to go on with the other {} rows (the skipped ones are listed with their reasons)",
            summary.rows_valid_in_shard
        ));
    }
    Err(Failure::input(message).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn scan_text(text: &str) -> DataSummary {
        scan_with_limit(text, 1022)
    }

    fn scan_with_limit(text: &str, max_residues: usize) -> DataSummary {
        let dir = tempfile::tempdir().unwrap();
        let path: PathBuf = dir.path().join("d.csv");
        std::fs::write(&path, text).unwrap();
        let rules = RowRules {
            max_residues,
            truncate: true,
        };
        scan(
            &DataSource::File(path),
            &ColumnNames::default(),
            rules,
            Shard::WHOLE,
        )
        .unwrap()
    }

    #[test]
    fn truncated_rows_are_counted_and_the_first_is_named_in_a_warning() {
        let summary = scan_with_limit("sequence\nEVQL\nEVQLVES\nQVQ\nQVQLQE\n", 5);
        assert_eq!(summary.rows_truncated, 2);
        let warning = truncation_warning(&summary, "d.csv").unwrap();
        assert!(
            warning.starts_with("warning: d.csv: 2 of 4 rows are longer than 5 residues and are scored on their first 5 only, the first at line 3\n"),
            "{warning}"
        );
        assert!(warning.contains("--no-truncate"), "{warning}");
        let within = scan_with_limit("sequence\nEVQL\nEVQLV\n", 5);
        assert_eq!(truncation_warning(&within, "d.csv"), None);
    }

    #[test]
    fn gapped_rows_are_counted_and_the_first_gap_is_located_in_the_field_as_written() {
        let summary = scan_text("id,sequence,label\na,EVQL,1\nb, evq-l.,0\nc,QV..Q,1\nd,QV*,1\n");
        assert_eq!(summary.rows_valid, 3);
        assert_eq!(summary.rows_with_gaps, 2);
        let site = summary.first_gap.clone().unwrap();
        assert_eq!(
            site,
            GapSite {
                line: 3,
                column: "sequence".into(),
                field: 2,
                position: 5
            }
        );
        let warning = gap_warning(&summary, "d.csv").unwrap();
        assert!(
            warning.starts_with("warning: d.csv: 2 of 4 rows hold alignment gaps ('-' or '.'), the first at line 3, column sequence (field 2, character 5)"),
            "{warning}"
        );
        assert!(
            warning.contains("fix: score the sequences without gaps"),
            "{warning}"
        );
    }

    #[test]
    fn repeated_ids_and_sequences_are_counted_and_the_first_named() {
        // Rows 2 and 5 repeat ids (`a`, `b`); `EVQL` comes back as ` evql` (normalised alike) with the other
        // label, then a third time unlabeled; `QVQ` repeats with its own label; the invalid row is not counted.
        let summary = scan_text(
            "id,sequence,label\na,EVQL,1\na,QVQ,0\nb, evql,0\nc,QVQ,0\nb,EVQL,\n,QVQ,0\n,J,1\nd,QVQ,1\n",
        );
        assert_eq!(summary.rows_valid, 7);
        assert_eq!(summary.rows_with_repeated_id, 2);
        assert_eq!(summary.first_repeated_id, Some(("a".to_string(), 3)));
        assert_eq!(summary.rows_with_repeated_sequence, 5);
        assert_eq!(summary.first_repeated_sequence_line, Some(4));
        assert_eq!(summary.sequences_with_both_labels, 2);
        assert_eq!(summary.first_both_labels_line, Some(4));
        let warning = repeated_id_warning(&summary, "d.csv", Some("predictions.csv")).unwrap();
        assert!(
            warning.starts_with("warning: d.csv: 2 rows reuse an id that an earlier row has, the first `a` at line 3;"),
            "{warning}"
        );
        assert!(
            warning.contains("predictions.csv has one line per row with its 0-based `row` number, so join it to the data by `row`"),
            "{warning}"
        );
        let for_fit = repeated_id_warning(&summary, "d.csv", None).unwrap();
        assert!(!for_fit.contains("join"), "{for_fit}");
        let warning = both_labels_warning(&summary, "d.csv").unwrap();
        assert!(
            warning.starts_with("warning: d.csv: 2 sequences are labeled 0 on one row and 1 on another, the first at line 4;"),
            "{warning}"
        );
        let warning = repeated_sequence_warning(&summary, "d.csv").unwrap();
        assert!(
            warning.starts_with("warning: d.csv: 5 rows repeat the sequence of an earlier row, the first at line 4;"),
            "{warning}"
        );
    }

    /// Regression: past its ceiling, the sequence table's `entry` reserved a slot for every new key and
    /// doubled the table (30 MB instead of 13 on 1.2 million rows). Full, both tables keep their size; rows
    /// after that are still compared with the ones remembered.
    #[test]
    fn the_repeat_tables_stop_at_their_ceiling_and_still_find_repeats_of_what_they_hold() {
        let record = |i: usize, id: String| Record {
            row: i as u64,
            line: i as u64 + 2,
            id: Some(id),
            residues: format!("EVQL{i}").into_bytes(),
            label: Some((i % 2) as u8),
            truncated: false,
            gap_at: None,
        };
        let mut repeats = Repeats::default();
        let mut summary = DataSummary::default();
        for i in 0..REPEATS_TRACKED {
            repeats.see(&record(i, format!("r{i}")), &mut summary);
        }
        let capacities = (repeats.ids.capacity(), repeats.sequences.capacity());
        assert_eq!(
            capacities,
            (REPEATS_TRACKED, REPEATS_TRACKED),
            "full at the ceiling, not past it"
        );
        for i in REPEATS_TRACKED..REPEATS_TRACKED + 1000 {
            repeats.see(&record(i, format!("r{i}")), &mut summary);
        }
        assert_eq!(
            (repeats.ids.len(), repeats.sequences.len()),
            (REPEATS_TRACKED, REPEATS_TRACKED)
        );
        assert_eq!(
            (repeats.ids.capacity(), repeats.sequences.capacity()),
            capacities
        );
        assert_eq!(
            (
                summary.rows_with_repeated_id,
                summary.rows_with_repeated_sequence
            ),
            (0, 0)
        );
        // Row 0 again with the other label: found. A row past the ceiling again: not remembered.
        let mut again = record(0, "r0".into());
        again.label = Some(1);
        repeats.see(&again, &mut summary);
        repeats.see(
            &record(REPEATS_TRACKED + 10, format!("r{}", REPEATS_TRACKED + 10)),
            &mut summary,
        );
        assert_eq!(summary.rows_with_repeated_id, 1);
        assert_eq!(summary.rows_with_repeated_sequence, 1);
        assert_eq!(summary.sequences_with_both_labels, 1);
    }

    #[test]
    fn distinct_rows_give_no_repeat_warnings_and_an_unlabeled_copy_is_no_conflict() {
        let summary = scan_text("id,sequence,label\na,EVQL,\nb,QVQ,0\nc,EVQL,1\nd,QVQL,0\n");
        assert_eq!(repeated_id_warning(&summary, "d.csv", Some("p.csv")), None);
        assert_eq!(both_labels_warning(&summary, "d.csv"), None);
        assert_eq!(summary.rows_with_repeated_sequence, 1);
        let singular = repeated_sequence_warning(&summary, "d.csv").unwrap();
        assert!(
            singular.starts_with("warning: d.csv: 1 row repeats the sequence"),
            "{singular}"
        );
        let no_ids = scan_text("sequence\nEVQL\nQVQ\n");
        assert_eq!(no_ids.rows_with_repeated_sequence, 0);
        assert_eq!(repeated_sequence_warning(&no_ids, "d.csv"), None);
    }

    #[test]
    fn rows_without_gaps_give_no_warning() {
        let summary = scan_text("sequence\nEVQL\nQVQ\n");
        assert_eq!(summary.rows_with_gaps, 0);
        assert_eq!(gap_warning(&summary, "d.csv"), None);
    }

    #[test]
    fn a_gap_cut_off_by_truncation_is_not_scored_and_not_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.csv");
        std::fs::write(&path, "sequence\nEVQLV-\n").unwrap();
        let rules = RowRules {
            max_residues: 5,
            truncate: true,
        };
        let summary = scan(
            &DataSource::File(path),
            &ColumnNames::default(),
            rules,
            Shard::WHOLE,
        )
        .unwrap();
        assert_eq!((summary.rows_truncated, summary.rows_with_gaps), (1, 0));
    }
}
