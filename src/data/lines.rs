//! Line ends and line numbers for CSV input: what lets every message point at the line a row is on.

use std::io::Read;

/// Line ends normalised for the csv crate, whose line counter counts '\n' only: CRLF and a lone CR (a
/// "CSV (Macintosh)" file) become LF, and a last line without one gets one. Every record then ends in '\n',
/// so [`first_line`] can work out where it started. It also follows the quoting as the csv crate reads it, so
/// a field holding line breaks can be told apart: closed, or a quote left open to the end of the file.
pub struct LfLineEnds<R> {
    inner: R,
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
    /// A '\r' at the end of the last chunk, not yet known to be part of "\r\n".
    held_cr: bool,
    /// The last byte handed out: a stream that ends without '\n' is given one.
    last: Option<u8>,
    finished: bool,
    delimiter: u8,
    quoting: Quoting,
    open_at_end: OpenQuote,
}

/// Where the bytes so far leave the csv crate's reader (its defaults: a quote opens a field only at the field's
/// start, and is escaped by doubling it). Only quotes change it, so a chunk is scanned quote to quote.
#[derive(Debug, Clone, Copy, Default)]
struct Quoting {
    in_quotes: bool,
    /// A quote inside a quoted field ended the last chunk: doubled, an escaped quote; otherwise the field's end.
    quote_pending: bool,
    /// The last byte scanned, which says whether a quote at a chunk's start is at a field's start.
    previous: Option<u8>,
}

impl Quoting {
    fn scan(&mut self, chunk: &[u8], delimiter: u8) {
        let Some(&last) = chunk.last() else {
            return;
        };
        let mut at = 0;
        if self.quote_pending {
            self.quote_pending = false;
            if chunk[0] == b'"' {
                at = 1;
            } else {
                self.in_quotes = false;
            }
        }
        while at < chunk.len() {
            let Some(found) = memchr::memchr(b'"', &chunk[at..]) else {
                break;
            };
            let quote = at + found;
            at = quote + 1;
            if self.in_quotes {
                match chunk.get(quote + 1) {
                    Some(b'"') => at = quote + 2,
                    Some(_) => self.in_quotes = false,
                    None => self.quote_pending = true,
                }
            } else {
                let before = if quote == 0 {
                    self.previous
                } else {
                    Some(chunk[quote - 1])
                };
                self.in_quotes = before.is_none_or(|b| b == delimiter || b == b'\n');
            }
        }
        self.previous = Some(last);
    }

    /// At the end of the input: inside a quoted field (a pending quote closes it).
    fn open_at_end(&self) -> bool {
        self.in_quotes && !self.quote_pending
    }
}

/// Whether the input ended inside a quoted field, known once [`LfLineEnds`] has read to the end.
#[derive(Debug, Clone, Default)]
pub struct OpenQuote(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl OpenQuote {
    pub fn at_end(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl<R: Read> LfLineEnds<R> {
    /// The stream over `inner`, whose fields are split by `delimiter`, and the handle that says whether it
    /// ended inside a quoted field.
    pub fn new(inner: R, delimiter: u8) -> (LfLineEnds<R>, OpenQuote) {
        let open_at_end = OpenQuote::default();
        let stream = LfLineEnds {
            inner,
            buffer: vec![0u8; 64 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            held_cr: false,
            last: None,
            finished: false,
            delimiter,
            quoting: Quoting::default(),
            open_at_end: open_at_end.clone(),
        };
        (stream, open_at_end)
    }

    /// Refills the internal buffer with converted bytes; leaves it empty only at the end of the input.
    fn fill(&mut self) -> std::io::Result<()> {
        self.start = 0;
        self.end = 0;
        while !self.finished {
            let offset = usize::from(self.held_cr);
            if self.held_cr {
                self.buffer[0] = b'\r';
            }
            let n = self.inner.read(&mut self.buffer[offset..])?;
            if n == 0 {
                self.finished = true;
                // A lone CR at the very end, or a last line with no end at all.
                if self.held_cr || self.last.is_some_and(|b| b != b'\n') {
                    self.buffer[0] = b'\n';
                    self.end = 1;
                    self.quoting.scan(b"\n", self.delimiter);
                }
                self.held_cr = false;
                self.open_at_end.0.store(
                    self.quoting.open_at_end(),
                    std::sync::atomic::Ordering::Relaxed,
                );
                break;
            }
            let filled = offset + n;
            let out = if memchr::memchr(b'\r', &self.buffer[..filled]).is_none() {
                // Most files end their lines in LF alone: nothing to convert.
                self.held_cr = false;
                filled
            } else {
                self.convert_cr(filled)
            };
            self.end = out;
            self.quoting.scan(&self.buffer[..out], self.delimiter);
            if out > 0 {
                self.last = Some(self.buffer[out - 1]);
                break;
            }
        }
        Ok(())
    }
}

impl<R: Read> LfLineEnds<R> {
    /// Turns the first `filled` bytes' CRLF and lone CR into LF in place; returns their new length. A CR that
    /// ends the chunk is held back until the next chunk says whether an LF follows it.
    fn convert_cr(&mut self, filled: usize) -> usize {
        let mut out = 0;
        for i in 0..filled - 1 {
            match (self.buffer[i], self.buffer[i + 1]) {
                (b'\r', b'\n') => continue,
                (b'\r', _) => self.buffer[out] = b'\n',
                (b, _) => self.buffer[out] = b,
            }
            out += 1;
        }
        self.held_cr = self.buffer[filled - 1] == b'\r';
        if !self.held_cr {
            self.buffer[out] = self.buffer[filled - 1];
            out += 1;
        }
        out
    }
}

impl<R: Read> Read for LfLineEnds<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.start == self.end {
            self.fill()?;
        }
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buffer[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

/// The line a record starts on, from the line the reader stands at after it (`line_after`). The csv crate
/// stamps a record with the line where its read began, which is before any empty lines it skipped; over
/// [`LfLineEnds`] every record ends in '\n', so its start is the line after it less its own line breaks.
/// Only a quote left open at the end of the file takes that last '\n' into the field (`ran_to_end`).
pub fn first_line(line_after: u64, record: &csv::ByteRecord, ran_to_end: bool) -> u64 {
    let breaks = line_breaks(record.as_slice()) as u64;
    let terminator = u64::from(!ran_to_end);
    line_after.saturating_sub(terminator + breaks).max(1)
}

fn line_breaks(bytes: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', bytes).count()
}

/// A field holding line breaks, as (field index, 0-based; its line breaks). A quote opened and never
/// closed (`5" tag` written as `"5 tag`) makes the csv reader take every line after it, to the next quote
/// or the end of the file, as one field: those rows would vanish without an error. Sequence files have no
/// use for line breaks inside fields, so one is refused rather than guessed at.
fn field_with_line_breaks(record: &csv::ByteRecord) -> Option<(usize, usize)> {
    memchr::memchr(b'\n', record.as_slice())?;
    record
        .iter()
        .enumerate()
        .map(|(i, field)| (i, line_breaks(field)))
        .find(|&(_, breaks)| breaks > 0)
}

/// Whether a record holding line breaks is a quote left open to the end of the file: nothing follows it, and
/// the input ended inside a quoted field (`open`, from [`LfLineEnds::new`]).
fn ran_to_end<R: std::io::Read>(
    reader: &mut csv::Reader<R>,
    record: &csv::ByteRecord,
    open: &OpenQuote,
) -> bool {
    let ends_in_break = record
        .iter()
        .next_back()
        .is_some_and(|f| f.ends_with(b"\n"));
    ends_in_break
        && matches!(
            reader.read_byte_record(&mut csv::ByteRecord::new()),
            Ok(false)
        )
        && open.at_end()
}

/// The quoted field holding line breaks in `record`, the one `reader` has just read, if it has one: where it
/// starts, and whether its quote runs to the end of the file (which reads on from `reader` to tell).
pub fn quoted_span<R: std::io::Read>(
    reader: &mut csv::Reader<R>,
    record: &csv::ByteRecord,
    open: &OpenQuote,
) -> Option<QuotedSpan> {
    let (field, breaks) = field_with_line_breaks(record)?;
    let line_after = reader.position().line();
    let ran_to_end = ran_to_end(reader, record, open);
    Some(QuotedSpan {
        field,
        line: first_line(line_after, record, ran_to_end),
        breaks,
        ran_to_end,
    })
}

/// Where a quoted field holding line breaks starts and ends, for its refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotedSpan {
    /// 0-based field index.
    pub field: usize,
    pub line: u64,
    pub breaks: usize,
    pub ran_to_end: bool,
}

/// The refusal of a field holding line breaks: where its quote opened, how far it runs, and the fix.
pub fn line_breaks_refusal(name: &str, span: QuotedSpan, column: Option<&str>) -> String {
    let column = column.map_or(String::new(), |c| format!(" (`{c}`)"));
    let reach = if span.ran_to_end {
        "is never closed, so every line after it, to the end of the file, would be read as part of this one \
field"
            .to_string()
    } else {
        format!(
            "is closed only on line {}, so every line between would be read as part of this one field",
            span.line + span.breaks as u64
        )
    };
    format!(
        "{name}: line {}, field {}{column}: a quoted field holds a line break: the `\"` that opens it {reach}\n  \
fix: if the quote is stray, remove it or close it (a field holding a quote is written wholly quoted, the quote \
doubled: \"5\"\" tag\"); if the field really holds line breaks (a sequence pasted from a FASTA file or a PDF), \
remove them: a line break inside a field is refused, since a stray quote would otherwise swallow rows unseen",
        span.line,
        span.field + 1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most three bytes a read, so line ends fall across chunk boundaries.
    struct Dribble(&'static [u8]);
    impl Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(3);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn normalised(input: &'static [u8]) -> Vec<u8> {
        let mut out = Vec::new();
        LfLineEnds::new(Dribble(input), b',')
            .0
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn crlf_and_lone_cr_become_lf_across_chunk_boundaries_and_a_last_line_gets_its_end() {
        assert_eq!(normalised(b"ab\r\ncd\r\r\nx\ry\r"), b"ab\ncd\n\nx\ny\n");
        assert_eq!(normalised(b"ab\r"), b"ab\n");
        assert_eq!(normalised(b"a\r\r\rb"), b"a\n\n\nb\n");
        assert_eq!(normalised(b"ab\n"), b"ab\n");
        assert_eq!(normalised(b""), b"");
    }

    /// The line of every record, read through the csv crate as the readers do.
    fn lines_of(input: &'static [u8]) -> Vec<u64> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(LfLineEnds::new(Dribble(input), b',').0);
        let mut record = csv::ByteRecord::new();
        let mut lines = Vec::new();
        while reader.read_byte_record(&mut record).unwrap() {
            lines.push(first_line(reader.position().line(), &record, false));
        }
        lines
    }

    #[test]
    fn regression_a_row_after_empty_lines_was_placed_on_the_first_empty_line() {
        assert_eq!(lines_of(b"h\na\n\n\n\nb\n\nc"), [1, 2, 6, 8]);
        assert_eq!(lines_of(b"h\r\na\r\n\r\nb\r\n"), [1, 2, 4]);
    }

    #[test]
    fn regression_a_file_with_cr_line_ends_put_every_row_on_line_1() {
        assert_eq!(lines_of(b"h\ra\rb\r\rc\r"), [1, 2, 3, 5]);
    }

    #[test]
    fn a_record_with_a_quoted_line_break_starts_where_its_quote_opened() {
        assert_eq!(lines_of(b"h\n\"a\nb\",x\nc\n"), [1, 2, 4]);
    }

    #[test]
    fn a_stray_quote_is_found_with_the_lines_it_swallows() {
        let spans = |input: &'static [u8]| {
            let (stream, open) = LfLineEnds::new(Dribble(input), b',');
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(stream);
            let mut record = csv::ByteRecord::new();
            let mut found = Vec::new();
            while reader.read_byte_record(&mut record).unwrap() {
                found.push(quoted_span(&mut reader, &record, &open));
            }
            found
        };
        // Left open on line 3: lines 4 and 5, and the file's last line end, go into its field.
        let open = spans(b"id,notes\na,ok\n\nb,\"5 mg\nc,ok\nd,ok\n");
        let span = QuotedSpan {
            field: 1,
            line: 4,
            breaks: 3,
            ran_to_end: true,
        };
        assert_eq!(open, [None, None, Some(span)]);
        let message = line_breaks_refusal("d.csv", span, Some("notes"));
        assert!(
            message.starts_with("d.csv: line 4, field 2 (`notes`): a quoted field holds a line break: the `\"` that opens it is never closed"),
            "{message}"
        );
        // Closed by a second stray quote on line 5: the row between is taken into the field.
        let closed = spans(b"id,notes\na,\"5\nb,ok\nc,2\"\nd,ok");
        let span = QuotedSpan {
            field: 1,
            line: 2,
            breaks: 2,
            ran_to_end: false,
        };
        assert_eq!(closed, [None, Some(span), None]);
        assert!(line_breaks_refusal("d.csv", span, None).contains("is closed only on line 4"));
        // Regression: a closed field whose last character is a line break, as the file's last record (with and
        // without a final line end), was called never closed and placed a line late.
        let span = QuotedSpan {
            field: 1,
            line: 3,
            breaks: 2,
            ran_to_end: false,
        };
        for input in [
            &b"id,notes\na,ok\nb,\"5\nmg\n\"\n"[..],
            b"id,notes\na,ok\nb,\"5\nmg\n\"",
        ] {
            // Three records, the last one closed.
            assert_eq!(spans(input), [None, None, Some(span)]);
        }
        let closed_last = |input: &'static [u8]| spans(input).pop().flatten();
        // An escaped quote ("") inside the field leaves it open; a quote after the field's start is literal.
        let open = closed_last(b"id,notes\na,\"5 \"\" mg\nb,ok\n");
        assert!(open.is_some_and(|span| span.ran_to_end), "{open:?}");
        assert_eq!(spans(b"id,notes\na,5\" tag\nb,ok\n"), [None, None, None]);
    }
}
