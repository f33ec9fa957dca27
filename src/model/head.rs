//! The logistic-regression head: reading its JSON and turning a pooled embedding into a probability.

use anyhow::Result;
use serde::Deserialize;

use crate::error::Failure;

/// Logistic regression on the pooled embedding: p = sigmoid(coef . e + intercept).
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub coef: Vec<f64>,
    pub intercept: f64,
    /// The head's own decision threshold; None when its file gives none (the run's default 0.5 applies).
    pub threshold: Option<f64>,
    /// The SHA-256 of the model file whose embeddings it was fitted on, where its file records it
    /// (`esmbench fit` does).
    pub model_sha256: Option<String>,
}

/// scikit-learn stores coef_ as [[...]] and intercept_ as [x]; the head files store them flat. Both are accepted.
#[derive(Deserialize)]
#[serde(untagged)]
enum Numbers {
    Flat(Vec<f64>),
    Nested(Vec<Vec<f64>>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    One(f64),
    List(Vec<f64>),
}

#[derive(Deserialize)]
struct HeadFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    pooling: Option<String>,
    threshold: Option<f64>,
    coef: Numbers,
    intercept: Number,
    /// Provenance, read only when it is a string.
    model_sha256: Option<serde_json::Value>,
}

impl Head {
    /// Reads and parses the head JSON file a `--head` names.
    pub fn read(path: &std::path::Path) -> Result<Head> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::usage(format!(
                "cannot read head {}: {e}\n  fix: check the path given to --head",
                path.display()
            ))
        })?;
        Head::from_json(&text, &path.display().to_string())
    }

    /// Parses head JSON; `origin` names the file or metadata key in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Head> {
        // Configs and CSVs may start with a byte-order mark (as Windows editors save them); so may a head.
        let text = text.trim_start_matches('\u{feff}');
        if let Some((given, meant)) = misspelled_key(text) {
            return Err(Failure::usage(format!(
                "{origin}: key `{given}` is not read; `{meant}` is, and is missing\n  fix: rename `{given}` to `{meant}` \
(a head without `threshold` is read with 0.5)"
            ))
            .into());
        }
        let file: HeadFile = serde_json::from_str(text).map_err(|e| {
            // Python's json.dump writes a NaN or infinite coefficient as the bare word NaN or Infinity.
            // serde stops at the word's first letter, or after the sign of `-Infinity`.
            let at = e.column().saturating_sub(1);
            let word = text.lines().nth(e.line().saturating_sub(1)).and_then(|line| {
                [at.saturating_sub(1), at].into_iter().find_map(|start| {
                    ["-Infinity", "NaN", "Infinity"]
                        .into_iter()
                        .find(|word| line.get(start..).is_some_and(|rest| rest.starts_with(word)))
                        .map(|word| (word, start + 1))
                })
            });
            match word {
                Some((word, column)) => Failure::usage(format!(
                    "{origin}: line {}, column {column}: `{word}` is not a number a head can hold (Python's json.dump writes a \
non-finite float so)\n  fix: in `coef` or `intercept` it means the fit diverged: refit the head (scale the \
embeddings or lower C); in another key, write null there",
                    e.line(),
                )),
                None => Failure::usage(format!(
                    "{origin}: not a head JSON ({e})\n  fix: expected {{\"type\": \"logistic_regression\", \"coef\": [...], \"intercept\": x, \"threshold\": 0.5}}"
                )),
            }
        })?;
        if let Some(kind) = file.kind.as_deref() {
            if kind != "logistic_regression" {
                return Err(Failure::usage(format!(
                    "{origin}: head type `{kind}` is not supported\n  fix: use a logistic_regression head"
                ))
                .into());
            }
        }
        if let Some(pooling) = file.pooling.as_deref() {
            if pooling != "mean_residues" {
                return Err(Failure::usage(format!(
                    "{origin}: head pooling `{pooling}` is not supported\n  fix: train the head on mean_residues embeddings (mean over residues, no <cls>/<eos>)"
                ))
                .into());
            }
        }
        let coef = match file.coef {
            Numbers::Flat(v) => v,
            Numbers::Nested(rows) if rows.len() == 1 => rows.into_iter().next().unwrap_or_default(),
            Numbers::Nested(rows) => {
                return Err(Failure::usage(format!(
                    "{origin}: coef has {} rows; a binary head has one\n  fix: export a binary classifier",
                    rows.len()
                ))
                .into())
            }
        };
        if let Some(key) = scaler_key(text, coef.len()) {
            return Err(Failure::usage(format!(
                "{origin}: holds `{key}`, a feature scaler's: esmbench applies the head to the raw pooled embedding, \
so a head fitted after a StandardScaler would score every row wrongly\n  fix: fold the scaler into the head \
(coef / scale as `coef`, intercept - sum(coef * mean / scale) as `intercept`) and drop `{key}`"
            ))
            .into());
        }
        let intercept = match file.intercept {
            Number::One(x) => x,
            Number::List(v) if v.len() == 1 => v[0],
            Number::List(v) => {
                return Err(Failure::usage(format!(
                    "{origin}: intercept has {} values; a binary head has one\n  fix: write scikit-learn's intercept_[0] as `intercept`",
                    v.len()
                ))
                .into())
            }
        };
        let threshold = file.threshold;
        if coef.is_empty()
            || coef.iter().any(|c| !c.is_finite())
            || !intercept.is_finite()
            || !threshold.is_none_or(|t| (0.0..=1.0).contains(&t))
        {
            return Err(Failure::usage(format!(
                "{origin}: coef must be non-empty and finite, threshold in [0, 1]\n  fix: write the fitted coef_[0] (finite numbers) and a threshold between 0 and 1"
            ))
            .into());
        }
        Ok(Head {
            coef,
            intercept,
            threshold,
            model_sha256: file
                .model_sha256
                .and_then(|v| v.as_str().map(str::to_string)),
        })
    }

    pub fn hidden_size(&self) -> usize {
        self.coef.len()
    }

    pub fn decision(&self, embedding: &[f32]) -> f64 {
        self.coef
            .iter()
            .zip(embedding)
            .map(|(c, &e)| c * f64::from(e))
            .sum::<f64>()
            + self.intercept
    }

    pub fn probability(&self, embedding: &[f32]) -> f64 {
        sigmoid(self.decision(embedding))
    }
}

/// The keys a head is read by. Others (provenance such as `trained_on`, `source`, `C`) are left alone.
const HEAD_KEYS: [&str; 5] = ["type", "pooling", "threshold", "coef", "intercept"];

/// A feature scaler's key at the top level: a list of `width` numbers (one per coefficient) under a name such
/// as scikit-learn's StandardScaler `mean_`, `scale_`, `var_` (or `embedding_mean`, `std`), or an object named
/// like `scaler`. Provenance under such a name (`"scale": "8M"`, `"mean_auc": [0.71, 0.74]`) is left alone.
fn scaler_key(text: &str, width: usize) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value.as_object()?.iter().find_map(|(key, value)| {
        let name = key.trim_matches('_').to_ascii_lowercase();
        // Flat, or in scikit-learn's 2-D shape ([[...]]), as `coef` may be.
        let numbers = |items: &Vec<serde_json::Value>| {
            items.len() == width && items.iter().all(serde_json::Value::is_number)
        };
        let per_feature = match value.as_array().map(Vec::as_slice) {
            Some([serde_json::Value::Array(row)]) => numbers(row),
            Some(_) => value.as_array().is_some_and(numbers),
            None => false,
        };
        let scaler_name = ["mean", "scale", "var", "std"].iter().any(|part| {
            name == *part
                || name.ends_with(&format!("_{part}"))
                || name.starts_with(&format!("{part}_"))
        });
        ((scaler_name && per_feature) || (name.contains("scaler") && value.is_object()))
            .then(|| key.clone())
    })
}

/// A key that is a near miss of a head key the file lacks: `treshold` or `Threshold` would otherwise leave the
/// threshold at 0.5 without a word, and scikit-learn's `coef_`/`intercept_` would be called a missing field.
fn misspelled_key(text: &str) -> Option<(String, &'static str)> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let object = value.as_object()?;
    object.keys().find_map(|given| {
        let normalized = given.trim_matches('_').to_ascii_lowercase();
        HEAD_KEYS
            .into_iter()
            .filter(|meant| !object.contains_key(*meant) && given != meant)
            .find(|meant| strsim::damerau_levenshtein(&normalized, meant) <= meant.len().min(8) / 4)
            .map(|meant| (given.clone(), meant))
    })
}

pub fn sigmoid(z: f64) -> f64 {
    // Written in the two halves that keep exp() from overflowing.
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_near_miss_of_a_head_key_is_refused_and_provenance_keys_are_not() {
        let head = |extra: &str| format!(r#"{{"coef": [0.5, -0.5], "intercept": 0.1{extra}}}"#);
        for (text, given, meant) in [
            (head(r#", "treshold": 0.3"#), "treshold", "threshold"),
            (head(r#", "Threshold": 0.3"#), "Threshold", "threshold"),
            (head(r#", "tyep": "logistic_regression""#), "tyep", "type"),
            (
                r#"{"coef_": [[0.5, -0.5]], "intercept": 0.1}"#.to_string(),
                "coef_",
                "coef",
            ),
            (
                r#"{"coef": [0.5], "intercept_": [0.1]}"#.to_string(),
                "intercept_",
                "intercept",
            ),
        ] {
            let error = format!("{:#}", Head::from_json(&text, "h.json").unwrap_err());
            assert!(
                error.contains(&format!(
                    "h.json: key `{given}` is not read; `{meant}` is, and is missing"
                )) && error.contains(&format!("fix: rename `{given}` to `{meant}`")),
                "{error}"
            );
        }
        let with_provenance = head(
            r#", "threshold": 0.3, "trained_on": "boughter", "source": "x", "C": 1.0, "n": 9, "tool": {}, "cv": null, "model": "m", "solver": {}"#,
        );
        assert_eq!(
            Head::from_json(&with_provenance, "h.json")
                .unwrap()
                .threshold,
            Some(0.3)
        );
        // A near miss beside the real key is left alone: the real one is read.
        let both = head(r#", "threshold": 0.3, "treshold": 0.9"#);
        assert_eq!(
            Head::from_json(&both, "h.json").unwrap().threshold,
            Some(0.3)
        );
    }

    /// Regression: a head Python's json.dump wrote with a NaN coefficient was "not a head JSON (expected value at
    /// line 1 column 103)"; a head fitted after a StandardScaler (its `mean_` and `scale_` beside `coef`) was
    /// applied to the raw embedding without a word; a byte-order mark was refused; a head without a threshold
    /// was credited with one (0.5 "from the classifier head").
    #[test]
    fn regression_nan_scaler_keys_a_byte_order_mark_and_a_missing_threshold() {
        for (word, column) in [("NaN", 11), ("Infinity", 11), ("-Infinity", 11)] {
            let text = format!("{{\"coef\": [{word}, 0.5], \"intercept\": 0.1}}");
            let error = Head::from_json(&text, "h.json").unwrap_err();
            assert_eq!(crate::error::exit_code_for(&error), 2);
            assert!(
                error.to_string().starts_with(&format!(
                    "h.json: line 1, column {column}: `{word}` is not a number a head can hold"
                )) && error.to_string().contains("refit the head"),
                "{error}"
            );
        }
        for (key, value) in [
            ("mean_", "[1.0]"),
            ("scale_", "[1.0]"),
            ("scale", "[1.0]"),
            ("embedding_std", "[1.0]"),
            ("scaler", r#"{"mean_": [1.0], "scale_": [2.0]}"#),
            ("mean_", "[[1.0]]"),
        ] {
            let text = format!("{{\"coef\": [0.5], \"intercept\": 0.1, \"{key}\": {value}}}");
            let error = Head::from_json(&text, "h.json").unwrap_err().to_string();
            assert!(
                error.contains(&format!("holds `{key}`, a feature scaler's"))
                    && error.contains("fold the scaler"),
                "{error}"
            );
        }
        // Provenance under such a name is not a scaler: a string, a number, or a list not one per coefficient.
        for provenance in [
            r#""scale": "8M""#,
            r#""cv_mean": 0.8"#,
            r#""mean_auc": 0.7"#,
            r#""mean_auc": [0.71, 0.74, 0.69]"#,
            r#""scale_grid": [0.01, 0.1]"#,
        ] {
            let text = format!("{{\"coef\": [0.5], \"intercept\": 0.1, {provenance}}}");
            assert!(Head::from_json(&text, "h.json").is_ok(), "{provenance}");
        }
        let head =
            Head::from_json("\u{feff}{\"coef\": [0.5], \"intercept\": 0.1}", "h.json").unwrap();
        assert_eq!(head.threshold, None);
    }

    #[test]
    fn flat_and_sklearn_shaped_heads_parse_the_same() {
        let flat =
            Head::from_json(r#"{"type":"logistic_regression","coef":[1.0,-2.0],"intercept":0.5,"threshold":0.6,"trained_on":"x"}"#, "h")
                .unwrap();
        let nested = Head::from_json(
            r#"{"coef":[[1.0,-2.0]],"intercept":[0.5],"threshold":0.6}"#,
            "h",
        )
        .unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat.hidden_size(), 2);
    }

    #[test]
    fn probability_is_the_sigmoid_of_the_decision() {
        let head = Head {
            coef: vec![1.0, -2.0],
            intercept: 0.5,
            threshold: Some(0.5),
            model_sha256: None,
        };
        // 1*1 - 2*0.25 + 0.5 = 1.0
        assert!((head.probability(&[1.0, 0.25]) - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-15);
        assert!((sigmoid(-800.0)).abs() < 1e-300);
        assert_eq!(sigmoid(800.0), 1.0);
    }

    #[test]
    fn malformed_heads_are_usage_errors() {
        let err =
            Head::from_json(r#"{"type":"svm","coef":[1],"intercept":0}"#, "h.json").unwrap_err();
        assert!(err.to_string().contains("svm"));
        assert!(Head::from_json("[1,2]", "h.json").is_err());
        for (json, names) in [
            (
                r#"{"coef":[1,2],"intercept":[0.1,0.2]}"#,
                "intercept has 2 values",
            ),
            (r#"{"coef":[],"intercept":0}"#, "coef must be non-empty"),
            (
                r#"{"coef":[1],"intercept":0,"threshold":1.5}"#,
                "threshold in [0, 1]",
            ),
        ] {
            let err = Head::from_json(json, "h.json").unwrap_err();
            assert_eq!(crate::error::exit_code_for(&err), 2, "{json}");
            let text = err.to_string();
            assert!(
                text.contains(names) && text.contains("\n  fix: "),
                "{json}: {text}"
            );
        }
    }
}
