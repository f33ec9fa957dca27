//! The fast pass over the whole CSV before the model loads: counts rows and collects the first problems.

use anyhow::Result;

use crate::config::{ColumnNames, DataSource};
use crate::data::reader::{RecordReader, RowOutcome, RowProblem, RowRules};
use crate::error::Failure;

/// How many problems a failing validation lists.
pub const PROBLEMS_SHOWN: usize = 10;

#[derive(Debug, Clone, Default)]
pub struct DataSummary {
    pub rows_total: u64,
    pub rows_valid: u64,
    pub rows_invalid: u64,
    pub rows_truncated: u64,
    pub rows_labeled: u64,
    /// Valid rows labeled 1 (so a trainer can check for both classes before the model loads).
    pub rows_positive: u64,
    pub has_label_column: bool,
    pub has_id_column: bool,
    /// The first problems found, in file order.
    pub problems: Vec<RowProblem>,
}

/// Reads every row once without tokenizing anything into batches.
pub fn scan(source: &DataSource, columns: &ColumnNames, rules: RowRules) -> Result<DataSummary> {
    let mut reader = RecordReader::open(source, columns, rules, None)?;
    let mut summary = DataSummary {
        has_label_column: reader.layout().label.is_some(),
        has_id_column: reader.layout().id.is_some(),
        ..Default::default()
    };
    while let Some(outcome) = reader.next_row()? {
        summary.rows_total += 1;
        match outcome {
            RowOutcome::Valid(record) => {
                summary.rows_valid += 1;
                summary.rows_truncated += u64::from(record.truncated);
                summary.rows_labeled += u64::from(record.label.is_some());
                summary.rows_positive += u64::from(record.label == Some(1));
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
