//! Length-bucketed, token-budgeted batching: rows of similar length share a batch so padding stays near zero.

use crate::data::reader::Record;
use crate::data::tokenizer::{tokenize, PAD_ID};

/// What the writer needs to know about a row once its score comes back.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRow {
    pub row: u64,
    pub id: Option<String>,
    pub label: Option<u8>,
    /// Tokens including <cls> and <eos>.
    pub tokens: usize,
}

/// A padded [rows, seq_len] batch ready for the model.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    pub rows: Vec<BatchRow>,
    pub seq_len: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
}

impl TokenBatch {
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
    pub fn real_tokens(&self) -> usize {
        self.rows.iter().map(|r| r.tokens).sum()
    }
    pub fn padded_tokens(&self) -> usize {
        self.rows.len() * self.seq_len
    }
    /// Token counts (with <cls> and <eos>) per row, for pooling.
    pub fn lengths(&self) -> Vec<usize> {
        self.rows.iter().map(|r| r.tokens).collect()
    }

    fn from_records(records: &[Record]) -> TokenBatch {
        let seq_len = records
            .iter()
            .map(|r| r.residues.len() + 2)
            .max()
            .unwrap_or(2);
        let mut input_ids = vec![PAD_ID; records.len() * seq_len];
        let mut attention_mask = vec![0; records.len() * seq_len];
        let mut rows = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            let ids = tokenize(&record.residues);
            input_ids[i * seq_len..i * seq_len + ids.len()].copy_from_slice(&ids);
            attention_mask[i * seq_len..i * seq_len + ids.len()].fill(1);
            rows.push(BatchRow {
                row: record.row,
                id: record.id.clone(),
                label: record.label,
                tokens: ids.len(),
            });
        }
        TokenBatch {
            rows,
            seq_len,
            input_ids,
            attention_mask,
        }
    }
}

/// Sorts a window of records by length and cuts it into batches whose rows x longest row stays within
/// `max_tokens` (a row longer than the budget gets a batch of its own), as fair-esm's toks_per_batch.
pub fn cut_batches(mut window: Vec<Record>, max_tokens: usize) -> Vec<TokenBatch> {
    window.sort_by_key(|r| r.residues.len());
    let mut batches = Vec::new();
    let mut start = 0;
    while start < window.len() {
        let mut end = start + 1;
        while end < window.len()
            && (end - start + 1) * (window[end].residues.len() + 2) <= max_tokens
        {
            end += 1;
        }
        batches.push(TokenBatch::from_records(&window[start..end]));
        start = end;
    }
    batches
}

/// Collects records into a window of a few batches' worth of tokens, then releases them as batches.
/// The window bounds both memory and how far out of input order a result can arrive.
pub struct Batcher {
    max_tokens: usize,
    window: Vec<Record>,
    window_tokens: usize,
}

/// How many batches' worth of tokens one window holds: enough for lengths to sort well, small enough to stay bounded.
const WINDOW_BATCHES: usize = 16;

impl Batcher {
    pub fn new(max_tokens: usize) -> Batcher {
        Batcher {
            max_tokens,
            window: Vec::new(),
            window_tokens: 0,
        }
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Changes the budget for batches cut from now on (the memory watchdog lowers it).
    pub fn set_max_tokens(&mut self, max_tokens: usize) {
        self.max_tokens = max_tokens.max(3);
    }

    /// Adds a record; returns batches when the window is full.
    pub fn push(&mut self, record: Record) -> Vec<TokenBatch> {
        self.window_tokens += record.residues.len() + 2;
        self.window.push(record);
        if self.window_tokens >= self.max_tokens.saturating_mul(WINDOW_BATCHES) {
            self.flush()
        } else {
            Vec::new()
        }
    }

    /// Releases whatever is left.
    pub fn flush(&mut self) -> Vec<TokenBatch> {
        self.window_tokens = 0;
        cut_batches(std::mem::take(&mut self.window), self.max_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(row: u64, len: usize) -> Record {
        Record {
            row,
            line: row + 2,
            id: None,
            residues: vec![b'A'; len],
            label: None,
            truncated: false,
            gap_at: None,
        }
    }

    #[test]
    fn batches_respect_the_token_budget_and_keep_every_row_once() {
        let window: Vec<Record> = (0..50)
            .map(|i| record(i, 1 + (i as usize * 7) % 40))
            .collect();
        let batches = cut_batches(window, 100);
        let mut seen: Vec<u64> = batches
            .iter()
            .flat_map(|b| b.rows.iter().map(|r| r.row))
            .collect();
        seen.sort();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        for b in &batches {
            assert!(
                b.padded_tokens() <= 100 || b.len() == 1,
                "{} x {}",
                b.len(),
                b.seq_len
            );
        }
    }

    #[test]
    fn a_row_longer_than_the_budget_gets_its_own_batch() {
        let batches = cut_batches(vec![record(0, 3), record(1, 50)], 20);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].seq_len, 52);
    }

    #[test]
    fn padding_and_masks_follow_each_rows_length() {
        let batches = cut_batches(vec![record(0, 3), record(1, 1)], 1000);
        let b = &batches[0];
        assert_eq!(b.seq_len, 5);
        assert_eq!(b.rows[0].row, 1);
        assert_eq!(&b.input_ids[..5], &[0, 5, 2, 1, 1]);
        assert_eq!(&b.attention_mask[..5], &[1, 1, 1, 0, 0]);
        assert_eq!(&b.input_ids[5..], &[0, 5, 5, 5, 2]);
        assert_eq!(b.real_tokens(), 8);
        assert_eq!(b.padded_tokens(), 10);
    }

    #[test]
    fn the_batcher_holds_rows_until_the_window_fills() {
        let mut batcher = Batcher::new(10);
        let mut released = 0;
        for i in 0..200 {
            released += batcher
                .push(record(i, 3))
                .iter()
                .map(|b| b.len())
                .sum::<usize>();
        }
        released += batcher.flush().iter().map(|b| b.len()).sum::<usize>();
        assert_eq!(released, 200);
    }
}
