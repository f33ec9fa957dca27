//! Fuzz target: arbitrary bytes through CSV reading, row validation, tokenization and batching must never panic.
#![no_main]

use esmbench::config::ColumnNames;
use esmbench::data::batcher::cut_batches;
use esmbench::data::reader::{RecordReader, RowOutcome, RowRules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limits, so short and truncating configurations are explored too.
    let (knobs, body) = data.split_first().map(|(k, b)| (*k, b)).unwrap_or((0, data));
    let rules = RowRules { max_residues: 1 + usize::from(knobs % 64), truncate: knobs & 0x40 == 0 };
    let input: Box<dyn std::io::Read + Send> = Box::new(std::io::Cursor::new(body.to_vec()));
    let Ok(mut reader) = RecordReader::from_reader("fuzz.csv".into(), input, &ColumnNames::default(), rules) else {
        return;
    };
    let mut records = Vec::new();
    while let Ok(Some(outcome)) = reader.next_row() {
        match outcome {
            RowOutcome::Valid(record) => {
                assert!(!record.residues.is_empty() && record.residues.len() <= rules.max_residues);
                records.push(record);
            }
            RowOutcome::Invalid(problem) => {
                let _ = problem.to_string();
            }
        }
    }
    let rows = records.len();
    let batches = cut_batches(records, 3 + usize::from(knobs));
    assert_eq!(batches.iter().map(|b| b.len()).sum::<usize>(), rows);
    for batch in &batches {
        assert_eq!(batch.input_ids.len(), batch.len() * batch.seq_len);
    }
});
