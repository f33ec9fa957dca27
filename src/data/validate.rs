//! The fast pass over the whole CSV before the model loads: counts rows and collects the first problems.

use anyhow::Result;

use crate::config::{ColumnNames, DataSource, Shard};
use crate::data::reader::{RecordReader, RowOutcome, RowProblem, RowRules};
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
    while let Some(outcome) = reader.next_row()? {
        summary.rows_total += 1;
        match outcome {
            RowOutcome::Valid(record) => {
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

/// Every warning the scan has for the user (gaps, truncation), in the order they are printed.
pub fn warnings(summary: &DataSummary, name: &str) -> Vec<String> {
    [
        gap_warning(summary, name),
        truncation_warning(summary, name),
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

/// An error listing the first problems, when there are any.
pub fn require_all_valid(summary: &DataSummary, name: &str) -> Result<()> {
    if summary.rows_invalid == 0 {
        return Ok(());
    }
    let mut message = format!(
        "{name}: {} of {} rows are invalid; nothing was scored.\n",
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
