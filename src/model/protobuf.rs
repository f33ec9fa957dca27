//! Field-level protobuf reading and writing: a message is split into its fields as raw byte slices, so
//! an edit re-encodes only what it changes and every other byte (weights, metadata, fields this crate
//! does not know) is copied through as it was.

use prost::encoding::{decode_key, decode_varint, encode_key, encode_varint, WireType};

/// One field of a message: its number, the bytes of the whole field (key included), and its value
/// (for a length-delimited field, the bytes inside the length).
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub number: u32,
    pub raw: &'a [u8],
    pub value: &'a [u8],
}

/// Splits a serialized message into its fields, in order; an error for truncated or malformed input
/// and for the deprecated group encoding, which ONNX does not use.
pub fn fields(message: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = message;
    while !rest.is_empty() {
        let start = rest;
        let (number, wire_type) = decode_key(&mut rest).map_err(|e| e.to_string())?;
        let value_start = rest;
        let value = match wire_type {
            WireType::Varint => {
                decode_varint(&mut rest).map_err(|e| e.to_string())?;
                &value_start[..value_start.len() - rest.len()]
            }
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut rest).map_err(|e| e.to_string())?)
                    .map_err(|_| "a length does not fit in memory".to_string())?;
                if len > rest.len() {
                    return Err(format!(
                        "field {number} says {len} bytes, {} are left",
                        rest.len()
                    ));
                }
                let (value, after) = rest.split_at(len);
                rest = after;
                value
            }
            WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                let len = if wire_type == WireType::SixtyFourBit {
                    8
                } else {
                    4
                };
                if len > rest.len() {
                    return Err(format!("field {number} is cut short"));
                }
                let (value, after) = rest.split_at(len);
                rest = after;
                value
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(format!("field {number} uses the group encoding"))
            }
        };
        out.push(Field {
            number,
            raw: &start[..start.len() - rest.len()],
            value,
        });
    }
    Ok(out)
}

/// Appends a length-delimited field (a string, bytes or a nested message).
pub fn put_bytes(buf: &mut Vec<u8>, number: u32, value: &[u8]) {
    put_header(buf, number, value.len());
    buf.extend_from_slice(value);
}

/// Appends the key and length of a length-delimited field whose `len` value bytes the caller appends.
pub fn put_header(buf: &mut Vec<u8>, number: u32, len: usize) {
    encode_key(number, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// Appends a varint field (an integer or an enum).
pub fn put_varint(buf: &mut Vec<u8>, number: u32, value: u64) {
    encode_key(number, WireType::Varint, buf);
    encode_varint(value, buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_split_and_rejoin_to_the_same_bytes() {
        let mut message = Vec::new();
        put_varint(&mut message, 1, 300);
        put_bytes(&mut message, 7, b"graph bytes");
        put_bytes(&mut message, 1, b"");
        encode_key(3, WireType::ThirtyTwoBit, &mut message);
        message.extend_from_slice(&1.5f32.to_le_bytes());
        let split = fields(&message).expect("fields");
        let numbers: Vec<u32> = split.iter().map(|f| f.number).collect();
        assert_eq!(numbers, [1, 7, 1, 3]);
        assert_eq!(split[1].value, b"graph bytes");
        assert_eq!(split[2].value, b"");
        assert_eq!(split[3].value, 1.5f32.to_le_bytes());
        let rejoined: Vec<u8> = split.iter().flat_map(|f| f.raw.iter().copied()).collect();
        assert_eq!(rejoined, message);
    }

    #[test]
    fn a_length_past_the_end_is_an_error() {
        let mut message = Vec::new();
        put_bytes(&mut message, 7, b"0123456789");
        message.truncate(message.len() - 3);
        let err = fields(&message).expect_err("truncated");
        assert!(err.contains("field 7 says 10 bytes, 7 are left"), "{err}");
    }
}
