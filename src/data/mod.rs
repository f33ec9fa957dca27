//! Input side: CSV reading and validation, the ESM tokenizer, batching, and the producer thread.

pub mod batcher;
pub mod lines;
pub mod pipeline;
pub mod reader;
pub mod tokenizer;
pub mod validate;
