//! The ESM alphabet (fair-esm / Hugging Face EsmTokenizer order) and sequence-to-token conversion.

/// The 33 ESM tokens, in id order.
pub const ALPHABET: [&str; 33] = [
    "<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K",
    "Q", "N", "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>",
    "<mask>",
];
pub const CLS_ID: i64 = 0;
pub const PAD_ID: i64 = 1;
pub const EOS_ID: i64 = 2;
pub const UNK_ID: i64 = 3;

/// Token id of every single-character residue symbol; `UNK_ID` marks bytes outside the alphabet.
const RESIDUE_IDS: [i64; 256] = {
    let mut table = [UNK_ID; 256];
    let mut id = 4;
    while id < 31 {
        let symbol = ALPHABET[id].as_bytes()[0];
        table[symbol as usize] = id as i64;
        id += 1;
    }
    table
};

/// The token id of one residue symbol (already uppercased), or None when ESM has no token for it.
pub fn residue_id(symbol: u8) -> Option<i64> {
    match RESIDUE_IDS[symbol as usize] {
        UNK_ID => None,
        id => Some(id),
    }
}

/// What a raw sequence field becomes: surrounding whitespace trimmed, letters uppercased.
pub fn normalize(field: &[u8]) -> Vec<u8> {
    field
        .trim_ascii()
        .iter()
        .map(u8::to_ascii_uppercase)
        .collect()
}

/// The first byte (0-based index) that has no ESM token, if any.
pub fn first_invalid_residue(residues: &[u8]) -> Option<(usize, u8)> {
    residues
        .iter()
        .enumerate()
        .find(|(_, &b)| residue_id(b).is_none())
        .map(|(i, &b)| (i, b))
}

/// Shorter rows are left alone: a CDR or a peptide may be spelled with these letters alone.
const NUCLEOTIDE_MIN_LENGTH: usize = 30;

/// A DNA or RNA sequence: A, C, G and T are amino-acid letters too, so one passes the alphabet check and
/// would be scored as a protein of alanines, cysteines, glycines and threonines. AIRR files, the antibody
/// repertoire standard, name the nucleotide column `sequence` (the protein is `sequence_aa`). At least 30
/// letters, all of A C G T U N, with three or more of A C G T/U (so poly-alanine or poly-glycine is not one).
pub fn looks_like_nucleotides(residues: &[u8]) -> bool {
    if residues.len() < NUCLEOTIDE_MIN_LENGTH {
        return false;
    }
    let mut seen = [false; 4];
    for &b in residues {
        match b {
            b'A' => seen[0] = true,
            b'C' => seen[1] = true,
            b'G' => seen[2] = true,
            b'T' | b'U' => seen[3] = true,
            b'N' => {}
            _ => return false,
        }
    }
    seen.iter().filter(|&&s| s).count() >= 3
}

/// The first alignment gap ('-' or '.'; 0-based index), if any. Both are ESM tokens, so a gapped row is
/// valid, but it is scored as a different sequence from the protein itself.
pub fn first_gap(residues: &[u8]) -> Option<usize> {
    residues.iter().position(|&b| b == b'-' || b == b'.')
}

/// `<cls>` + residues + `<eos>`; symbols outside the alphabet become `<unk>` as in EsmTokenizer.
pub fn tokenize(residues: &[u8]) -> Vec<i64> {
    let mut ids = Vec::with_capacity(residues.len() + 2);
    ids.push(CLS_ID);
    ids.extend(residues.iter().map(|&b| RESIDUE_IDS[b as usize]));
    ids.push(EOS_ID);
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_and_residue_ids_follow_the_esm_alphabet() {
        assert_eq!(tokenize(b""), vec![0, 2]);
        assert_eq!(tokenize(b"LAGV"), vec![0, 4, 5, 6, 7, 2]);
        assert_eq!(
            tokenize(b"CXBUZO.-"),
            vec![0, 23, 24, 25, 26, 27, 28, 29, 30, 2]
        );
        assert_eq!(ALPHABET[31], "<null_1>");
        assert_eq!(ALPHABET[32], "<mask>");
    }

    #[test]
    fn normalize_trims_and_uppercases() {
        assert_eq!(normalize(b"  evqL \t"), b"EVQL".to_vec());
    }

    #[test]
    fn letters_outside_the_alphabet_are_found_and_become_unk() {
        assert_eq!(first_invalid_residue(b"EVQJL"), Some((3, b'J')));
        assert_eq!(first_invalid_residue(b"EVQL"), None);
        assert_eq!(first_invalid_residue(b"EV*"), Some((2, b'*')));
        assert_eq!(tokenize(b"J"), vec![0, UNK_ID, 2]);
    }

    #[test]
    fn nucleotide_sequences_are_told_from_proteins() {
        let vh = b"EVQLVESGGGLVQPGGSLRLSCAASGFTFSSYAMSWVRQAPGKGLEWVS";
        let dna = b"GAGGTGCAGCTGGTGGAGTCTGGGGGAGGCTTGGTACAGCCTGGGGGGTCCCTGAGA";
        assert!(looks_like_nucleotides(dna));
        assert!(looks_like_nucleotides(&dna.map(|b| if b == b'T' {
            b'U'
        } else {
            b
        })));
        assert!(!looks_like_nucleotides(vh));
        assert!(!looks_like_nucleotides(&[b'A'; 60]), "poly-alanine");
        assert!(
            !looks_like_nucleotides(&b"GCAGCTGGTG".repeat(2)),
            "too short to tell"
        );
        assert!(
            !looks_like_nucleotides(&b"GGGGAAAAGGGGAAAAGGGGAAAAGGGGAAAA"[..]),
            "two letters"
        );
    }

    #[test]
    fn alignment_gaps_are_tokens_and_the_first_is_found() {
        assert_eq!(first_gap(b"EVQ-L.V"), Some(3));
        assert_eq!(first_gap(b"EVQ.L"), Some(3));
        assert_eq!(first_gap(b"EVQL"), None);
        assert_eq!(first_invalid_residue(b"EV-.L"), None);
        assert_eq!(tokenize(b"-."), vec![0, 30, 29, 2]);
    }
}
