//! Which probability threshold applies and where it came from: --threshold or --assay, the config, the head, 0.5.
//!
//! The report records the value, its source and the preset, because "accuracy 0.71" means nothing without the
//! threshold behind it, and the PSR-assay sets (Shehata, Harvey) are scored at a different one than ELISA sets.

use crate::error::Failure;

/// The threshold in force and its provenance, as written to the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub value: f64,
    /// flag, config, head or default.
    pub source: String,
    /// The preset that set the value, if one did.
    pub assay: Option<Assay>,
}

/// A published threshold preset, named for the assay the labels come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assay {
    Elisa,
    Psr,
}

impl Assay {
    pub fn name(self) -> &'static str {
        match self {
            Assay::Elisa => "elisa",
            Assay::Psr => "psr",
        }
    }

    pub fn threshold(self) -> f64 {
        match self {
            Assay::Elisa => 0.5,
            Assay::Psr => 0.5495,
        }
    }

    pub fn from_name(name: &str) -> Option<Assay> {
        match name {
            "elisa" => Some(Assay::Elisa),
            "psr" => Some(Assay::Psr),
            _ => None,
        }
    }

    /// What the preset is, for the report.
    pub fn explanation(self) -> &'static str {
        match self {
            Assay::Elisa => {
                "ELISA polyreactivity labels, scored at the logistic head's natural 0.5"
            }
            Assay::Psr => {
                "the published calibration for the PSR assay (Shehata and Harvey data sets)"
            }
        }
    }
}

/// `value` as a probability; `named` is the value as the user gave it (`--threshold 1.5`, or
/// `` `threshold: 1.5` (in run.yaml) ``).
fn checked(value: f64, named: String) -> Result<f64, Failure> {
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(Failure::usage(format!(
            "{named} is not a probability\n  fix: use a value in [0, 1]"
        )))
    }
}

/// One level (the command line, or the config file): a threshold or a preset, not both.
fn level(
    value: Option<f64>,
    assay: Option<Assay>,
    source: &str,
    names: (&str, &str),
) -> Result<Option<Threshold>, Failure> {
    match (value, assay) {
        (Some(_), Some(_)) => Err(Failure::usage(format!(
            "both {} and {} are set in {source}\n  fix: keep one: {} T sets the value, {} elisa|psr a published preset",
            names.0, names.1, names.0, names.1
        ))),
        (Some(v), None) => Ok(Some(Threshold {
            value: checked(
                v,
                match names.0.strip_suffix(':') {
                    Some(key) => format!("`{key}: {v}` (in {source})"),
                    None => format!("{} {v}", names.0),
                },
            )?,
            source: source.into(),
            assay: None,
        })),
        (None, Some(a)) => Ok(Some(Threshold {
            value: a.threshold(),
            source: source.into(),
            assay: Some(a),
        })),
        (None, None) => Ok(None),
    }
}

/// The threshold asked for explicitly, if any: flags win over the config file, `config_file` as errors name it.
pub fn requested(
    flag_value: Option<f64>,
    flag_assay: Option<Assay>,
    config_value: Option<f64>,
    config_assay: Option<Assay>,
    config_file: &str,
) -> Result<Option<Threshold>, Failure> {
    let flag = level(
        flag_value,
        flag_assay,
        "the command line",
        ("--threshold", "--assay"),
    )?
    .map(|t| Threshold {
        source: "flag".into(),
        ..t
    });
    let config = level(
        config_value,
        config_assay,
        config_file,
        ("threshold:", "assay:"),
    )?
    .map(|t| Threshold {
        source: "config".into(),
        ..t
    });
    Ok(flag.or(config))
}

/// The threshold when neither the user nor the head gives one.
pub const DEFAULT: f64 = 0.5;

/// The requested threshold, else the head's, else [`DEFAULT`].
pub fn resolve(requested: Option<Threshold>, head: Option<f64>) -> Threshold {
    requested.unwrap_or_else(|| match head {
        Some(value) => Threshold {
            value,
            source: "head".into(),
            assay: None,
        },
        None => Threshold {
            value: DEFAULT,
            source: "default".into(),
            assay: None,
        },
    })
}

/// One line for people: "0.5495, from --assay psr: the published calibration ...".
pub fn describe(value: f64, source: &str, assay: Option<&str>) -> String {
    let preset = assay.and_then(Assay::from_name);
    match (source, preset) {
        ("flag", Some(a)) => format!("{value}, from --assay {}: {}", a.name(), a.explanation()),
        ("config", Some(a)) => format!(
            "{value}, from `assay: {}` in the config: {}",
            a.name(),
            a.explanation()
        ),
        ("flag", None) => format!("{value}, from --threshold"),
        ("config", None) => format!("{value}, from `threshold:` in the config"),
        ("head", _) => format!("{value}, from the classifier head"),
        ("default", _) => {
            format!("{value}, the default (neither a flag, the config nor the head gives one)")
        }
        (other, _) => format!("{value} ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_config_which_beats_the_head() {
        let t = requested(None, Some(Assay::Psr), Some(0.7), None, "c.yaml")
            .unwrap()
            .unwrap();
        assert_eq!((t.value, t.source.as_str()), (0.5495, "flag"));
        assert_eq!(t.assay, Some(Assay::Psr));
        let t = requested(None, None, None, Some(Assay::Elisa), "c.yaml")
            .unwrap()
            .unwrap();
        assert_eq!((t.value, t.source.as_str()), (0.5, "config"));
        let t = resolve(
            requested(None, None, None, None, "c.yaml").unwrap(),
            Some(0.6),
        );
        assert_eq!((t.value, t.source.as_str()), (0.6, "head"));
        assert_eq!(resolve(None, None).source, "default");
    }

    #[test]
    fn a_value_and_a_preset_at_one_level_or_a_bad_value_are_usage_errors() {
        let e = requested(Some(0.4), Some(Assay::Psr), None, None, "c.yaml").unwrap_err();
        assert!(
            e.message.contains("--threshold and --assay"),
            "{}",
            e.message
        );
        let e = requested(None, None, Some(1.5), None, "run.yaml").unwrap_err();
        assert!(
            e.message
                .starts_with("`threshold: 1.5` (in run.yaml) is not a probability"),
            "{}",
            e.message
        );
        let e = requested(Some(f64::NAN), None, None, None, "run.yaml").unwrap_err();
        assert!(
            e.message
                .starts_with("--threshold NaN is not a probability"),
            "{}",
            e.message
        );
    }

    #[test]
    fn the_description_names_the_preset_and_its_origin() {
        let d = describe(0.5495, "flag", Some("psr"));
        assert!(d.contains("--assay psr") && d.contains("PSR"), "{d}");
        assert!(describe(0.5, "head", None).contains("head"));
    }
}
