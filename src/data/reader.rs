//! Streaming CSV reader: finds the columns, checks every row, and yields records with their line numbers.

use std::fmt;
use std::io::{BufRead, Read};
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::{ColumnNames, DataSource};
use crate::data::lines::{
    first_line, line_breaks_refusal, quoted_span, LfLineEnds, OpenQuote, QuotedSpan,
};
use crate::data::tokenizer::{first_gap, first_invalid_residue, looks_like_nucleotides, normalize};
use crate::embedded;
use crate::error::Failure;
use crate::fingerprint::{Digesting, Seen};

/// Per-row rules that depend on the run configuration.
#[derive(Debug, Clone, Copy)]
pub struct RowRules {
    pub max_residues: usize,
    pub truncate: bool,
}

/// Where the used columns sit in the header.
#[derive(Debug, Clone)]
pub struct Layout {
    pub headers: Vec<String>,
    pub sequence: usize,
    pub label: Option<usize>,
    pub id: Option<usize>,
}

/// One valid data row, normalized.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// 0-based data row (header excluded): the key predictions are written under.
    pub row: u64,
    /// 1-based line in the file where the row starts.
    pub line: u64,
    pub id: Option<String>,
    pub residues: Vec<u8>,
    pub label: Option<u8>,
    pub truncated: bool,
    /// 1-based character in the sequence field of the first alignment gap ('-' or '.') among the residues
    /// scored, if any.
    pub gap_at: Option<usize>,
}

/// Why one row cannot be scored, with enough to find and fix it.
#[derive(Debug, Clone, PartialEq)]
pub struct RowProblem {
    pub row: u64,
    pub line: u64,
    /// The row's id, where the file has an id column and the row has that field, so a skipped row can be
    /// traced by name.
    pub id: Option<Box<str>>,
    pub column: String,
    /// 1-based field number in the row.
    pub field: usize,
    /// 1-based character position inside the field, when one character is at fault.
    pub position: Option<usize>,
    pub reason: String,
    pub fix: &'static str,
}

impl fmt::Display for RowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {} (field {}",
            self.line, self.column, self.field
        )?;
        if let Some(p) = self.position {
            write!(f, ", character {p}")?;
        }
        write!(f, "): {}; fix: {}", self.reason, self.fix)
    }
}

pub enum RowOutcome {
    Valid(Record),
    Invalid(RowProblem),
}

/// A header naming one column at several 0-based `fields`: refused, since reading whichever comes first
/// would score (or label) by one of them without a word. Shared with the predictions reader of `metrics`.
pub fn column_named_twice(file: &str, name: &str, fields: &[usize], flag: &str) -> Failure {
    column_named_twice_with(file, name, fields, &format!("pass {flag} NAME"))
}

/// [`column_named_twice`] with its own way out after "rename all but one of them, or".
fn column_named_twice_with(file: &str, name: &str, fields: &[usize], or: &str) -> Failure {
    Failure::input(format!(
        "{file}: line 1: {} columns are named `{name}` (fields {})\n  fix: rename all but one of them, or {or}",
        fields.len(),
        fields.iter().map(|i| (i + 1).to_string()).collect::<Vec<_>>().join(", ")
    ))
}

/// The two bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Opens the data source as a byte stream; a gzipped file (found by its first bytes, whatever its name) is
/// decompressed on the fly, as pandas reads a .csv.gz.
/// The data's bytes, gunzipped when they are gzip; `seen`, when given, hashes the file's bytes as they are read.
pub fn open_source(source: &DataSource, seen: Option<Arc<Seen>>) -> Result<Box<dyn Read + Send>> {
    Ok(match source {
        DataSource::File(path) => {
            let opened = std::fs::File::open(path)
                .with_context(|| format!("opening data {}", path.display()))?;
            let raw: Box<dyn Read + Send> = match seen {
                Some(seen) => Box::new(Digesting::new(opened, seen)),
                None => Box::new(opened),
            };
            let mut file = std::io::BufReader::with_capacity(1 << 20, raw);
            let head = file
                .fill_buf()
                .with_context(|| format!("reading data {}", path.display()))?;
            if head.starts_with(&GZIP_MAGIC) {
                Box::new(std::io::BufReader::with_capacity(
                    1 << 20,
                    flate2::bufread::MultiGzDecoder::new(file),
                ))
            } else {
                Box::new(file)
            }
        }
        DataSource::Embedded => Box::new(embedded::DEMO_DATA),
    })
}

pub struct RecordReader {
    name: String,
    reader: csv::Reader<Box<dyn Read + Send>>,
    layout: Layout,
    rules: RowRules,
    record: csv::ByteRecord,
    next_row: u64,
    /// Whether the file ended inside a quoted field, for the refusal of a field holding line breaks.
    open_quote: OpenQuote,
}

impl RecordReader {
    pub fn open(
        source: &DataSource,
        columns: &ColumnNames,
        rules: RowRules,
        seen: Option<Arc<Seen>>,
    ) -> Result<RecordReader> {
        Self::from_reader(
            source.display_name(),
            open_source(source, seen)?,
            columns,
            rules,
        )
    }

    pub fn from_reader(
        name: String,
        input: Box<dyn Read + Send>,
        columns: &ColumnNames,
        rules: RowRules,
    ) -> Result<RecordReader> {
        let delimiter = delimiter_for(&name);
        let (input, open_quote) = LfLineEnds::new(input, delimiter);
        let input: Box<dyn Read + Send> = Box::new(input);
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .has_headers(true)
            .from_reader(input);
        let header_record = reader
            .byte_headers()
            .map_err(|e| csv_failure(&name, e))?
            .clone();
        if header_record.is_empty()
            || (header_record.len() == 1 && header_record[0].trim_ascii().is_empty())
        {
            return Err(Failure::input(format!(
                "{name}: the file is empty (no header line)\n  fix: write a header such as `id,sequence,label` and one row per sequence"
            ))
            .into());
        }
        if let Some(span) = quoted_span(&mut reader, &header_record, &open_quote) {
            let span = QuotedSpan { line: 1, ..span };
            return Err(Failure::input(line_breaks_refusal(&name, span, None)).into());
        }
        if let Some(kind) = not_a_text_csv(&header_record, &name) {
            return Err(Failure::input(format!("{name}: line 1: {kind}")).into());
        }
        let mut headers = Vec::with_capacity(header_record.len());
        for (i, field) in header_record.iter().enumerate() {
            let text = std::str::from_utf8(field).map_err(|_| {
                Failure::input(format!("{name}: line 1, field {}: the header is not UTF-8\n  fix: save the file as UTF-8", i + 1))
            })?;
            headers.push(text.trim_start_matches('\u{feff}').trim().to_string());
        }
        // A name that matches two columns would silently score (or label) by whichever comes first.
        let find = |wanted: &str, named: bool, flag: &str| -> Result<Option<usize>, Failure> {
            let fields: Vec<usize> = (0..headers.len())
                .filter(|&i| headers[i].eq_ignore_ascii_case(wanted))
                .collect();
            // Names match in any case, and the default name matching two columns is refused (either could be
            // meant); a name the user gave picks the one spelt exactly so (`Sequence` beside `sequence`).
            let exact: Vec<usize> = fields
                .iter()
                .copied()
                .filter(|&i| named && headers[i] == wanted)
                .collect();
            match (&fields[..], &exact[..]) {
                ([], _) => Ok(None),
                ([only], _) | (_, [only]) => Ok(Some(*only)),
                _ => Err(column_named_twice_with(
                    &name,
                    wanted,
                    &fields,
                    &format!("pass {flag} with the exact name (and case) of the one to read"),
                )),
            }
        };
        let sequence = find(&columns.sequence, columns.named[0], "--sequence-column")?.ok_or_else(|| {
            // One header field holding tabs or semicolons is a TSV or a European-locale CSV, read as one column.
            let separator = match headers[..] {
                [ref only] if only.contains('\t') => Some("tab"),
                [ref only] if only.contains(';') => Some("semicolon"),
                _ => None,
            };
            let fasta = headers.first().is_some_and(|first| first.starts_with('>'));
            let fix = match separator {
                Some("tab") => "the header looks tab-separated; esmbench reads a file named .tsv (or .tsv.gz) as tab-separated \
and any other as comma-separated: rename it to .tsv, or save it with commas between the fields"
                    .to_string(),
                Some(separator) => format!(
                    "the header looks {separator}-separated; esmbench reads comma-separated files: save it with commas between the fields"
                ),
                None if fasta => FASTA_FIX.to_string(),
                None => format!(
                    "rename the sequence column to `{}` or pass --sequence-column NAME",
                    columns.sequence
                ),
            };
            Failure::input(format!(
                "{name}: line 1: no `{}` column (columns: {})\n  fix: {fix}",
                columns.sequence,
                crate::error::listed_columns(&headers),
            ))
        })?;
        let label = find(&columns.label, columns.named[1], "--label-column")?;
        let id = find(&columns.id, columns.named[2], "--id-column")?;
        // One column in two roles (`--label-column sequence`) would fail every row, or key rows by their labels.
        let roles = [
            (
                "label",
                label,
                "--label-column",
                Some((sequence, "sequence")),
            ),
            ("id", id, "--id-column", Some((sequence, "sequence"))),
            ("id", id, "--id-column", label.map(|at| (at, "label"))),
        ];
        for (role, at, flag, other) in roles {
            if let (Some(at), Some((taken, other))) = (at, other) {
                if at == taken {
                    return Err(Failure::input(format!(
                        "{name}: line 1: column `{}` would be both the {other} and the {role} column\n  \
fix: pass {flag} with another column's name",
                        crate::error::quoted(&headers[at])
                    ))
                    .into());
                }
            }
        }
        // The default names are optional (data without labels is scored without metrics); a name the user
        // chose must be there, or the run would go on without labels or ids and say only that it has none.
        let defaults = ColumnNames::default();
        for (wanted, found, named, default, flag, key) in [
            (
                &columns.label,
                label.is_some(),
                columns.named[1],
                &defaults.label,
                "--label-column",
                "columns.label",
            ),
            (
                &columns.id,
                id.is_some(),
                columns.named[2],
                &defaults.id,
                "--id-column",
                "columns.id",
            ),
        ] {
            // Named by the user, even as the default's spelling (`--label-column label`), it must be there.
            if !found && (named || wanted != default) {
                return Err(Failure::input(format!(
                    "{name}: line 1: no `{wanted}` column, which {flag} (or {key} in the config) names (columns: {})\n  \
fix: pass the name of a column in the header, or leave {flag} out",
                    crate::error::listed_columns(&headers)
                ))
                .into());
            }
        }
        let layout = Layout {
            sequence,
            label,
            id,
            headers,
        };
        Ok(RecordReader {
            name,
            reader,
            layout,
            rules,
            record: csv::ByteRecord::new(),
            next_row: 0,
            open_quote,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next row, valid or not; `None` at the end of the file. Errors are file-level (I/O, broken quoting).
    pub fn next_row(&mut self) -> Result<Option<RowOutcome>> {
        if !self
            .reader
            .read_byte_record(&mut self.record)
            .map_err(|e| csv_failure(&self.name, e))?
        {
            return Ok(None);
        }
        let row = self.next_row;
        self.next_row += 1;
        if let Some(span) = quoted_span(&mut self.reader, &self.record, &self.open_quote) {
            let column = self.layout.headers.get(span.field).map(String::as_str);
            return Err(Failure::input(line_breaks_refusal(&self.name, span, column)).into());
        }
        let line = first_line(self.reader.position().line(), &self.record, false);
        Ok(Some(match self.check_row(row, line) {
            Ok(record) => RowOutcome::Valid(record),
            Err(problem) => RowOutcome::Invalid(problem),
        }))
    }

    fn check_row(&self, row: u64, line: u64) -> std::result::Result<Record, RowProblem> {
        let layout = &self.layout;
        let id = layout
            .id
            .and_then(|col| self.record.get(col))
            .map(|field| String::from_utf8_lossy(field).trim().to_string())
            .filter(|id| !id.is_empty())
            .map(String::into_boxed_str);
        let problem =
            |field: usize, position: Option<usize>, reason: String, fix: &'static str| RowProblem {
                row,
                line,
                id: id.clone(),
                column: layout
                    .headers
                    .get(field)
                    .cloned()
                    .unwrap_or_else(|| format!("#{}", field + 1)),
                field: field + 1,
                position,
                reason,
                fix,
            };
        // The CSV reader skips an empty line but reads one holding only spaces or tabs (often a file's last
        // line) as a row of one field, which the field count below would describe as a broken row.
        if self.record.len() == 1
            && layout.headers.len() > 1
            && self.record[0].trim_ascii().is_empty()
        {
            return Err(problem(
                0,
                None,
                "the line holds nothing but whitespace".into(),
                "delete the line (empty lines are skipped, but one holding spaces or tabs is read as a row)",
            ));
        }
        if self.record.len() != layout.headers.len() {
            return Err(problem(
                self.record.len().min(layout.headers.len().saturating_sub(1)),
                None,
                format!("the row has {} fields but the header has {}", self.record.len(), layout.headers.len()),
                "make every row have one field per header column (quote fields that contain commas)",
            ));
        }
        // Files joined with `cat` repeat the header; `sequence`, `seq` and `heavy` are all residue letters, so the
        // header would otherwise be scored as a protein.
        let repeats_header = self
            .record
            .iter()
            .zip(&layout.headers)
            .all(|(field, name)| {
                std::str::from_utf8(field).is_ok_and(|text| {
                    text.trim_start_matches('\u{feff}')
                        .trim()
                        .eq_ignore_ascii_case(name)
                })
            });
        if repeats_header {
            return Err(problem(
                layout.sequence,
                None,
                "the row repeats the header (files joined with `cat`?)".into(),
                "delete the line; to join CSVs keep the first file's header only, e.g. `tail -n +2 b.csv >> a.csv`",
            ));
        }
        for (i, field) in self.record.iter().enumerate() {
            if let Err(e) = std::str::from_utf8(field) {
                return Err(problem(
                    i,
                    Some(e.valid_up_to() + 1),
                    "bytes that are not UTF-8".into(),
                    "save the file as UTF-8",
                ));
            }
        }
        let mut residues = normalize(&self.record[layout.sequence]);
        if residues.is_empty() {
            return Err(problem(
                layout.sequence,
                None,
                "empty sequence".into(),
                "remove the row or fill in its sequence",
            ));
        }
        // Positions below are counted in the field as written, leading blanks included.
        let leading = self.record[layout.sequence].len()
            - self.record[layout.sequence].trim_ascii_start().len();
        if let Some((at, byte)) = first_invalid_residue(&residues) {
            let shown = match byte {
                b' ' => "a space".to_string(),
                b'\t' => "a tab".to_string(),
                _ if byte.is_ascii_graphic() => format!("'{}'", byte as char),
                // The field is UTF-8 (checked above) and every byte before this one is ASCII: a character starts here.
                _ => match std::str::from_utf8(&residues[at..])
                    .ok()
                    .and_then(|rest| rest.chars().next())
                {
                    Some(c) if !c.is_ascii() => format!("'{c}' (U+{:04X})", c as u32),
                    _ => format!("byte 0x{byte:02x}"),
                },
            };
            let fix = match byte {
                b'*' => "'*' is a stop codon from translating DNA: cut the sequence at it (the protein ends there) or remove the row",
                b' ' | b'\t' | b'\r' | b'\n' => "remove the whitespace inside the sequence (one copied from a FASTA file, a PDF or a web page often carries line breaks and spaces)",
                _ => "use one-letter amino-acid codes (LAGVSERTIDPKQNFYMHWC, or X B U Z O . -)",
            };
            return Err(problem(
                layout.sequence,
                Some(leading + at + 1),
                format!("{shown} is not in the ESM alphabet"),
                fix,
            ));
        }
        if looks_like_nucleotides(&residues) {
            return Err(problem(
                layout.sequence,
                None,
                format!(
                    "a nucleotide sequence ({} letters, all A, C, G, T/U or N), not a protein",
                    residues.len()
                ),
                "ESM reads amino acids: pass the protein sequence (in AIRR files the `sequence_aa` column: --sequence-column sequence_aa), or translate it first",
            ));
        }
        let label = match layout.label {
            None => None,
            Some(col) => parse_label(&self.record[col]).map_err(|text| {
                problem(
                    col,
                    None,
                    format!("label `{}` is not 0 or 1", crate::error::quoted(&text)),
                    "write labels as 0 or 1 (0.0/1.0 and true/false also work; leave empty for unlabeled)",
                )
            })?,
        };
        let mut truncated = false;
        if residues.len() > self.rules.max_residues {
            if !self.rules.truncate {
                return Err(problem(
                    layout.sequence,
                    None,
                    format!(
                        "{} residues, longer than --max-residues {}",
                        residues.len(),
                        self.rules.max_residues
                    ),
                    "raise --max-residues, or pass --truncate to score such rows on their first residues",
                ));
            }
            residues.truncate(self.rules.max_residues);
            truncated = true;
        }
        let gap_at = first_gap(&residues).map(|at| leading + at + 1);
        // A row of nothing but gaps (an alignment's empty slot) is no protein: the model would embed the gaps.
        if residues.iter().all(|&b| b == b'-' || b == b'.') {
            let reason = if truncated {
                format!(
                    "the first {} characters, the part scored under --max-residues, are all gaps ('-' or '.')",
                    self.rules.max_residues
                )
            } else {
                "the sequence is all gaps ('-' or '.'), no residues".to_string()
            };
            return Err(problem(
                layout.sequence,
                None,
                reason,
                "remove the row or fill in its sequence (strip alignment gaps before scoring)",
            ));
        }
        let id = layout.id.map(|col| {
            String::from_utf8_lossy(&self.record[col])
                .trim()
                .to_string()
        });
        Ok(Record {
            row,
            line,
            id,
            residues,
            label,
            truncated,
            gap_at,
        })
    }
}

/// Tab-separated for a file named .tsv or .tsv.gz (AIRR rearrangement files, the repertoire standard, are TSV);
/// comma-separated otherwise.
pub fn delimiter_for(name: &str) -> u8 {
    let name = name.to_ascii_lowercase();
    if name.ends_with(".tsv") || name.ends_with(".tsv.gz") {
        b'\t'
    } else {
        b','
    }
}

/// A FASTA file's first line (`>name`) read as a CSV header: the file needs converting, not its column renaming.
const FASTA_FIX: &str = "this looks like FASTA (a `>` name line); esmbench reads CSV with a header line: convert it, e.g. \
`awk 'BEGIN{print \"id,sequence\"} /^>/{if(id!=\"\")print id\",\"s; id=substr($1,2); s=\"\"; next} {s=s $0} END{if(id!=\"\")print id\",\"s}' in.fasta > in.csv`";

/// What the header's bytes say the file is when it is not a text CSV at all: Excel's "Unicode text" (UTF-16),
/// or a binary file such as the model passed as --data. Either would otherwise be named a CSV with an
/// unreadable header or without a `sequence` column.
/// `name` is the file's name: a workbook's first line may end before its ZIP member names do.
fn not_a_text_csv(header: &csv::ByteRecord, name: &str) -> Option<&'static str> {
    let first = header.get(0).unwrap_or_default();
    if first.starts_with(&[0xff, 0xfe]) || first.starts_with(&[0xfe, 0xff]) {
        return Some("the file is UTF-16 text (as Excel's \"Unicode Text\" saves), not UTF-8\n  fix: save it as \"CSV UTF-8 (comma delimited)\"");
    }
    let control = |b: &u8| (b.is_ascii_control() && !matches!(b, b'\t' | b'\r')) || *b == 0x7f;
    if !header.iter().any(|field| field.iter().any(control)) {
        return None;
    }
    // The antibody sets are published as spreadsheets (Jain 2017's supplementary tables are .xlsx), and
    // pandas users keep tables as Parquet: name the format and the one step that makes the CSV.
    let whole = header.as_slice();
    let holds = |needle: &[u8]| whole.windows(needle.len()).any(|w| w == needle);
    let lower = name.to_ascii_lowercase();
    // Looked for only in a ZIP: the first line of another binary file can be megabytes long.
    let workbook = || {
        lower.ends_with(".xlsx")
            || lower.ends_with(".xlsm")
            || holds(b"xl/")
            || holds(b"[Content_Types]")
    };
    Some(if first.starts_with(b"PK\x03\x04") && workbook() {
        "the file is an Excel workbook (.xlsx), not a CSV\n  fix: in Excel, File > Save As > \"CSV UTF-8 (Comma delimited)\"; or in Python, pandas.read_excel(\"in.xlsx\").to_csv(\"in.csv\", index=False)"
    } else if first.starts_with(b"PK\x03\x04") {
        "the file is a ZIP archive, not a CSV\n  fix: unzip it and pass the CSV inside as --data"
    } else if first.starts_with(&[0xd0, 0xcf, 0x11, 0xe0]) {
        "the file is an Excel 97-2003 workbook (.xls), not a CSV\n  fix: in Excel, File > Save As > \"CSV UTF-8 (Comma delimited)\"; or in Python, pandas.read_excel(\"in.xls\").to_csv(\"in.csv\", index=False)"
    } else if first.starts_with(&[0x1f, 0x8b]) {
        // A gzip file is unpacked whatever its name before these checks, so gzip bytes here were packed twice.
        "the file is gzip-compressed twice (a .gz of a .gz)\n  fix: unpack it once, e.g. `gunzip -c in.csv.gz.gz > in.csv.gz`"
    } else if first.starts_with(b"PAR1") {
        "the file is Parquet, not a CSV\n  fix: in Python, pandas.read_parquet(\"in.parquet\").to_csv(\"in.csv\", index=False)"
    } else {
        "the file is binary, not a CSV\n  fix: pass the CSV of sequences as --data (an .onnx model goes to --model)"
    })
}

/// Labels are 0/1, also written as any number equal to them (0.0, 1.00) or as true/false in any case (pandas
/// writes a bool column as True/False, and scikit-learn takes bool labels as 0/1); an empty field means
/// unlabeled. The error gives the field's text. `esmbench test` and `esmbench metrics` read labels with this.
pub fn parse_label(field: &[u8]) -> std::result::Result<Option<u8>, String> {
    let text = String::from_utf8_lossy(field.trim_ascii()).into_owned();
    if text.is_empty() {
        return Ok(None);
    }
    if text.eq_ignore_ascii_case("true") {
        return Ok(Some(1));
    }
    if text.eq_ignore_ascii_case("false") {
        return Ok(Some(0));
    }
    match text.parse::<f64>() {
        Ok(0.0) => Ok(Some(0)),
        Ok(1.0) => Ok(Some(1)),
        _ => Err(text),
    }
}

fn csv_failure(name: &str, error: csv::Error) -> anyhow::Error {
    let place = error
        .position()
        .map(|p| format!(": line {}", p.line()))
        .unwrap_or_default();
    match error.kind() {
        // Reading a plain file gives none of these kinds; the gzip decoder gives them for a stream that is cut
        // short or damaged (a partial download, a file that was still being written).
        csv::ErrorKind::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::InvalidInput
                    | std::io::ErrorKind::InvalidData
            ) =>
        {
            Failure::input(format!(
                "{name}{place}: the gzip data is cut short or damaged ({e})\n  fix: check it with `gzip -t {name}`, and download or compress it again"
            ))
            .into()
        }
        csv::ErrorKind::Io(_) => anyhow::Error::new(error).context(format!("reading {name}")),
        _ => Failure::input(format!(
            "{name}{place}: {error}\n  fix: check the quoting of that line"
        ))
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(text: &'static [u8]) -> Result<RecordReader> {
        RecordReader::from_reader(
            "t.csv".into(),
            Box::new(text),
            &ColumnNames::default(),
            RowRules {
                max_residues: 10,
                truncate: true,
            },
        )
    }

    fn rows(text: &'static [u8]) -> Vec<std::result::Result<Record, RowProblem>> {
        let mut r = reader(text).unwrap();
        let mut out = Vec::new();
        while let Some(o) = r.next_row().unwrap() {
            out.push(match o {
                RowOutcome::Valid(rec) => Ok(rec),
                RowOutcome::Invalid(p) => Err(p),
            });
        }
        out
    }

    #[test]
    fn bom_crlf_quotes_case_spaces_and_extra_columns_are_valid() {
        let out = rows(
            b"\xef\xbb\xbfextra,Label,Sequence,ID\r\nx,1.0,\" evql \",a\r\ny,0,LAGV,\"b,c\"\r\n",
        );
        let recs: Vec<Record> = out.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(recs[0].residues, b"EVQL");
        assert_eq!(recs[0].label, Some(1));
        assert_eq!(recs[0].id.as_deref(), Some("a"));
        assert_eq!(recs[0].line, 2);
        assert_eq!(recs[1].id.as_deref(), Some("b,c"));
        assert_eq!(recs[1].label, Some(0));
        assert_eq!(recs[1].row, 1);
    }

    #[test]
    fn invalid_rows_name_line_column_and_fix() {
        let out = rows(b"id,sequence,label\na,EVQJ,0\nb,,1\nc,EVQL,2\nd,EVQL\ne,EVQL,\n");
        let p = out[0].clone().unwrap_err();
        assert_eq!((p.line, p.field, p.position), (2, 2, Some(4)));
        assert!(
            p.to_string().contains("'J' is not in the ESM alphabet"),
            "{p}"
        );
        assert!(out[1]
            .clone()
            .unwrap_err()
            .reason
            .contains("empty sequence"));
        assert!(out[2].clone().unwrap_err().reason.contains("label `2`"));
        assert!(out[3].clone().unwrap_err().reason.contains("2 fields"));
        assert_eq!(out[4].clone().unwrap().label, None);
    }

    #[test]
    fn regression_a_line_of_spaces_was_called_a_row_with_too_few_fields() {
        let out = rows(b"id,sequence,label\na,EVQL,0\n   \n\t\nb,LAGV,1\n\n");
        assert_eq!(
            out.len(),
            4,
            "the empty last line is no row; the two blank ones are"
        );
        for (p, line) in [
            (out[1].clone().unwrap_err(), 3),
            (out[2].clone().unwrap_err(), 4),
        ] {
            assert_eq!(p.line, line);
            assert!(p.reason.contains("nothing but whitespace"), "{p}");
            assert!(p.fix.starts_with("delete the line"), "{p}");
        }
        assert_eq!(out[3].clone().unwrap().id.as_deref(), Some("b"));
    }

    #[test]
    fn non_utf8_bytes_are_a_row_problem() {
        let out = rows(b"sequence\nEV\xffQ\n");
        assert!(out[0].clone().unwrap_err().reason.contains("not UTF-8"));
    }

    #[test]
    fn long_sequences_are_truncated_and_flagged() {
        let out = rows(b"sequence\nAAAAAAAAAAAAAAA\n");
        let rec = out[0].clone().unwrap();
        assert_eq!(rec.residues.len(), 10);
        assert!(rec.truncated);
    }

    #[test]
    fn missing_sequence_column_and_empty_file_are_clear_errors() {
        let err = reader(b"id,seq\na,EVQL\n").err().unwrap();
        assert!(err.to_string().contains("--sequence-column"), "{err}");
        assert_eq!(crate::error::exit_code_for(&err), 2);
        let err = reader(b"").err().unwrap();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    /// Regression: a stray quote took the rest of the file into one field, and the run went on without those
    /// rows; a sequence pasted with its line breaks is refused the same way, naming its line.
    #[test]
    fn regression_a_field_holding_line_breaks_stops_the_file_at_its_line() {
        let mut r = reader(b"sequence,notes\nEVQL,ok\n\n\"EVQL\nVES\",x\nLAGV,5\"\n").unwrap();
        assert!(matches!(r.next_row(), Ok(Some(RowOutcome::Valid(_)))));
        let refusal = r.next_row().err().expect("refused");
        assert_eq!(crate::error::exit_code_for(&refusal), 2);
        let text = refusal.to_string();
        assert!(
            text.starts_with(
                "t.csv: line 4, field 1 (`sequence`): a quoted field holds a line break"
            ) && text.contains("closed only on line 5")
                && text.contains("a sequence pasted from a FASTA file"),
            "{text}"
        );
        let mut r = reader(b"sequence,notes\nEVQL,\"5 mg\nLAGV,ok\nEVQL,ok\n").unwrap();
        let text = r.next_row().err().expect("refused").to_string();
        assert!(
            text.starts_with("t.csv: line 2, field 2 (`notes`)") && text.contains("never closed"),
            "{text}"
        );
        let header = reader(b"\"id,sequence\nEVQL\n").err().unwrap().to_string();
        assert!(
            header.starts_with("t.csv: line 1, field 1: a quoted field holds a line break"),
            "{header}"
        );
    }

    /// Regression: two files joined with `cat` repeated the header, and `sequence` (all residue letters) was
    /// scored as a protein.
    #[test]
    fn regression_a_repeated_header_was_scored_as_a_sequence() {
        let out = rows(b"id,Sequence\na,EVQL\n\xef\xbb\xbfid,sequence\nb,LAGV\nid,EVQL\n");
        assert!(
            out[0].is_ok() && out[2].is_ok() && out[3].is_ok(),
            "{out:?}"
        );
        let problem = out[1].clone().unwrap_err();
        assert_eq!((problem.line, problem.column.as_str()), (3, "Sequence"));
        assert!(
            problem.to_string().contains("the row repeats the header")
                && problem.fix.contains("tail -n +2"),
            "{problem}"
        );
    }

    /// Regression: `sequence` and `Sequence` side by side were refused with a fix (--sequence-column NAME) that
    /// could not tell them apart; a column given two roles failed every row.
    #[test]
    fn regression_columns_differing_in_case_and_one_column_in_two_roles() {
        // The names as a user gives them (--sequence-column, --label-column), or the defaults when `named` is false.
        let read_named = |text: &'static [u8], sequence: &str, label: &str, named: bool| {
            RecordReader::from_reader(
                "t.csv".into(),
                Box::new(text),
                &ColumnNames {
                    sequence: sequence.into(),
                    label: label.into(),
                    named: [named, false, false],
                    ..ColumnNames::default()
                },
                RowRules {
                    max_residues: 10,
                    truncate: true,
                },
            )
        };
        let read = |text, sequence, label| read_named(text, sequence, label, true);
        let text = b"id,sequence,Sequence\na,EVQL,LAGV\n";
        for (wanted, residues) in [("Sequence", b"LAGV"), ("sequence", b"EVQL")] {
            let mut r = read(text, wanted, "label").unwrap();
            let Some(RowOutcome::Valid(record)) = r.next_row().unwrap() else {
                panic!("a valid row")
            };
            assert_eq!(record.residues, residues, "{wanted}");
        }
        // The default name matching both is still refused: either could be meant.
        let twice = read_named(text, "sequence", "label", false)
            .err()
            .unwrap()
            .to_string();
        assert!(twice.contains("2 columns are named `sequence`"), "{twice}");
        let twice = read(b"SEQUENCE,sequence\nEVQL,LAGV\n", "Sequence", "label")
            .err()
            .unwrap()
            .to_string();
        assert!(twice.contains("2 columns are named `Sequence`"), "{twice}");
        let both = read(b"sequence,label\nEVQL,1\n", "sequence", "sequence")
            .err()
            .unwrap()
            .to_string();
        assert!(
            both.contains("column `sequence` would be both the sequence and the label column")
                && both.contains("fix: pass --label-column with another column's name"),
            "{both}"
        );
    }

    /// Regression: a sequence of nothing but gaps (`---`, an alignment's empty slot) was scored as a protein.
    #[test]
    fn regression_a_sequence_of_only_gaps_was_scored() {
        let out = rows(b"sequence\n---\nEV-QL\n..\n------------EVQL\n");
        for at in [0, 2] {
            let problem = out[at].clone().unwrap_err();
            assert!(problem.to_string().contains("all gaps"), "{problem}");
        }
        assert!(out[1].is_ok());
        // Cut to its first 10 characters, all gaps: what would be scored is said.
        let cut = out[3].clone().unwrap_err().to_string();
        assert!(
            cut.contains(
                "the first 10 characters, the part scored under --max-residues, are all gaps"
            ),
            "{cut}"
        );
    }

    #[test]
    fn crlf_files_report_the_right_line() {
        let out = rows(b"sequence,label\r\nEVQL,1\r\nEVQL,7\r\n");
        assert_eq!(out[1].clone().unwrap_err().line, 3);
    }

    #[test]
    fn no_label_column_means_unlabeled_rows() {
        let out = rows(b"sequence\nEVQL\n");
        assert_eq!(out[0].clone().unwrap().label, None);
    }

    /// Regression: a label column pandas wrote from a bool column (True/False) made every row invalid under
    /// `esmbench test`, while `esmbench metrics` read the same labels as 1/0.
    #[test]
    fn regression_labels_read_true_false_as_metrics_does_and_numbers_equal_to_0_or_1() {
        for (text, expected) in [
            ("True", Ok(Some(1))),
            ("FALSE", Ok(Some(0))),
            (" true ", Ok(Some(1))),
            ("1.00", Ok(Some(1))),
            ("0.0", Ok(Some(0))),
            ("", Ok(None)),
            ("yes", Err("yes".to_string())),
            ("0.5", Err("0.5".to_string())),
            ("nan", Err("nan".to_string())),
        ] {
            assert_eq!(parse_label(text.as_bytes()), expected, "{text:?}");
        }
        let out = rows(b"sequence,label\nEVQL,True\nEVQL,False\n");
        let labels: Vec<_> = out.iter().map(|r| r.clone().unwrap().label).collect();
        assert_eq!(labels, vec![Some(1), Some(0)]);
    }

    /// Regression: a space or line break inside a sequence was named "byte 0x20" / "byte 0x0a", and a
    /// non-ASCII letter by its first byte, with the alphabet as the fix.
    #[test]
    fn regression_whitespace_and_non_ascii_inside_a_sequence_are_named_for_what_they_are() {
        for (csv, shown, fix) in [
            (
                &b"sequence\nEVQ LVES\n"[..],
                "a space is not in the ESM alphabet",
                "remove the whitespace",
            ),
            (
                "sequence\nEVQ\u{2013}LV\n".as_bytes(),
                "'\u{2013}' (U+2013) is not in the ESM alphabet",
                "one-letter amino-acid codes",
            ),
            (
                b"sequence\nEVQ\x01LV\n",
                "byte 0x01 is not in the ESM alphabet",
                "one-letter amino-acid codes",
            ),
        ] {
            let out = rows(csv);
            let problem = out[0].clone().unwrap_err().to_string();
            assert!(
                problem.contains(shown) && problem.contains(fix),
                "{problem}"
            );
        }
    }

    /// Regression: a spreadsheet, a ZIP, a gzip file packed twice or a Parquet file was called "binary, not a
    /// CSV" with advice about the model flag.
    #[test]
    fn regression_spreadsheets_archives_and_parquet_are_named_with_the_step_that_makes_a_csv() {
        let zip_with = |member: &[u8]| {
            let mut bytes = b"PK\x03\x04\x14\x00\x00\x00\x08\x00".to_vec();
            bytes.extend_from_slice(member);
            bytes.extend_from_slice(b"\x00\x01\x02\n");
            bytes
        };
        for (bytes, expected) in [
            (
                zip_with(b"[Content_Types].xml"),
                "an Excel workbook (.xlsx)",
            ),
            (zip_with(b"xl/workbook.xml"), "an Excel workbook (.xlsx)"),
            (zip_with(b"data/jain.csv"), "a ZIP archive"),
            (
                b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00\n".to_vec(),
                "Excel 97-2003 workbook (.xls)",
            ),
            (
                b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\n".to_vec(),
                "gzip-compressed twice",
            ),
            (b"PAR1\x15\x04\x15\x10\x00\n".to_vec(), "Parquet"),
            (b"\x08\x0a\x3a\x01\x00\n".to_vec(), "binary, not a CSV"),
        ] {
            let header = csv::ByteRecord::from(vec![bytes.as_slice()]);
            let said = not_a_text_csv(&header, "data.csv").expect("refused");
            assert!(said.contains(expected) && said.contains("fix: "), "{said}");
        }
        let text = csv::ByteRecord::from(vec!["id", "sequence"]);
        assert_eq!(not_a_text_csv(&text, "data.csv"), None);
        // A workbook whose first line ends before its member names is still named by its file name.
        let cut = csv::ByteRecord::from(vec![&b"PK\x03\x04\x14\x00\x01"[..]]);
        assert!(not_a_text_csv(&cut, "Jain2017.xlsx")
            .unwrap()
            .contains("Excel workbook"));
        assert!(not_a_text_csv(&cut, "data.csv")
            .unwrap()
            .contains("ZIP archive"));
    }
}
