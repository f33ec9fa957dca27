//! Training the logistic head on pooled embeddings: the optimizer, the stratified folds and cross-validation.

pub mod cv;
pub mod folds;
pub mod logistic;
