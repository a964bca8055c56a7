//! A fast deflate (RFC 1951) encoder for expositions.
//!
//! An exposition is tens of megabytes of lines that differ from the lines
//! before them in a few digits. A general-purpose deflate spends most of its
//! time searching hash chains for the longest of many candidate matches; here
//! one candidate is enough. The encoder keeps the last position of each
//! five-byte sequence (one probe, no chains, as LZ4 does), extends a match
//! eight bytes at a time, and codes each block of tokens with Huffman codes
//! built for it (or the fixed codes, when they are smaller). The body is
//! about the size zlib's level 1 gives, in a fraction of its time
//! (docs/performance.md).

mod codes;

use codes::{
    distance_symbol, fixed_codes, BitWriter, Code, CodeLengths, DISTANCE_BASE, DISTANCE_EXTRA,
    DISTANCE_SYMBOLS, END_OF_BLOCK, LENGTH_BASE, LENGTH_EXTRA, LENGTH_SYMBOL, LITLEN_SYMBOLS,
};

/// How far back a match may reach (the format's limit).
const WINDOW: usize = 32 * 1024;
/// The shortest match worth coding (the format's shortest is three bytes).
const MIN_MATCH: usize = 4;
/// The longest match the format has.
const MAX_MATCH: usize = 258;
/// Bits of the position table's index.
const HASH_BITS: u32 = 15;
/// Tokens per block: enough that a block's code tables cost little, few
/// enough that its codes follow the text.
const BLOCK_TOKENS: usize = 1 << 16;
/// Input the window keeps beyond its history before it is moved down.
const SHIFT_AT: usize = 4 * WINDOW;
/// Input held back at the end of a part: a match starting before it may
/// reach its end, and its words are read eight bytes at a time.
const HELD_BACK: usize = MAX_MATCH + 8;
/// Parts from this size on are coded where they lie rather than copied.
const IN_PLACE_FROM: usize = 2 * WINDOW + HELD_BACK;

/// One token: a literal byte, or a match (flagged by the top bit) with its
/// distance's symbol (bits 24 to 28), its length less three (bits 16 to 23)
/// and its distance less one.
#[derive(Clone, Copy)]
struct Token(u32);

const MATCH_FLAG: u32 = 1 << 31;

impl Token {
    fn literal(byte: u8) -> Self {
        Token(u32::from(byte))
    }

    fn match_of(length: usize, distance: usize, distance_symbol: usize) -> Self {
        debug_assert!((3..=MAX_MATCH).contains(&length) && (1..=WINDOW).contains(&distance));
        Token(
            MATCH_FLAG
                | ((distance_symbol as u32) << 24)
                | ((length as u32 - 3) << 16)
                | (distance as u32 - 1),
        )
    }
}

/// A deflate stream written a part at a time.
pub struct Deflate {
    /// The last [`WINDOW`] bytes already coded, then the input not yet coded.
    window: Vec<u8>,
    /// Where the input not yet coded starts in `window`.
    coded: usize,
    /// The stream position of `window[0]`.
    base: u64,
    /// The stream position (truncated) last seen with each hash.
    positions: Box<[u32; 1 << HASH_BITS]>,
    block: Block,
    writer: BitWriter,
}

/// The tokens of the block being gathered, and how often each symbol occurs.
struct Block {
    tokens: Vec<Token>,
    litlen_frequencies: [u32; LITLEN_SYMBOLS],
    distance_frequencies: [u32; DISTANCE_SYMBOLS],
}

impl Block {
    fn push_literals(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.litlen_frequencies[usize::from(byte)] += 1;
        }
        self.tokens
            .extend(bytes.iter().map(|&byte| Token::literal(byte)));
    }

    #[inline]
    fn push_match(&mut self, length: usize, distance: usize) {
        self.litlen_frequencies[257 + usize::from(LENGTH_SYMBOL[length - 3])] += 1;
        let symbol = distance_symbol(distance - 1);
        self.distance_frequencies[symbol] += 1;
        self.tokens.push(Token::match_of(length, distance, symbol));
    }

    fn is_full(&self) -> bool {
        self.tokens.len() >= BLOCK_TOKENS
    }
}

/// The eight bytes of `bytes` at `at`, little-endian.
///
/// # Safety
///
/// `at + 8 <= bytes.len()`: the match search checks its bounds once per
/// match or position, not once per word it reads.
#[inline]
unsafe fn word_at(bytes: &[u8], at: usize) -> u64 {
    debug_assert!(at + 8 <= bytes.len());
    // SAFETY: the caller keeps the eight bytes within `bytes`; an unaligned read.
    u64::from_le(unsafe { bytes.as_ptr().add(at).cast::<u64>().read_unaligned() })
}

#[inline]
fn hash(word: u64) -> usize {
    // The low five bytes, multiplied into the high bits.
    ((word << 24).wrapping_mul(0x00cf_1bbc_dcbb) >> (64 - HASH_BITS)) as usize
}

impl Deflate {
    /// An empty stream, written after `prefix` (a container's header).
    pub fn after(prefix: Vec<u8>) -> Self {
        Deflate {
            window: Vec::new(),
            coded: 0,
            base: 0,
            positions: vec![0; 1 << HASH_BITS]
                .into_boxed_slice()
                .try_into()
                .unwrap_or_else(|_| unreachable!("the table has its size")),
            block: Block {
                tokens: Vec::with_capacity(BLOCK_TOKENS),
                litlen_frequencies: [0; LITLEN_SYMBOLS],
                distance_frequencies: [0; DISTANCE_SYMBOLS],
            },
            writer: BitWriter {
                bytes: prefix,
                pending: 0,
                count: 0,
            },
        }
    }

    /// Compresses `part` after the parts before it. Input near its end waits
    /// for the next part (a match may reach into it) or for
    /// [`Deflate::finish`].
    ///
    /// A small part is copied behind the window's history and coded there. A
    /// large one is coded where it lies: only its start, whose matches may
    /// reach into the history, is copied behind it, and its end becomes the
    /// history of the next.
    pub fn write(&mut self, part: &[u8]) {
        if self.coded > SHIFT_AT {
            // Keep the window's history, drop what lies before it.
            let drop = self.coded - WINDOW;
            self.window.drain(..drop);
            self.coded -= drop;
            self.base += drop as u64;
        }
        if part.len() < IN_PLACE_FROM {
            self.window.extend_from_slice(part);
            let end = self.window.len().saturating_sub(HELD_BACK);
            if end > self.coded {
                self.code_window(end);
            }
            return;
        }
        // The part's first `WINDOW` positions, behind the history.
        let head = WINDOW + HELD_BACK;
        let part_base = self.base + self.window.len() as u64;
        self.window.extend_from_slice(&part[..head]);
        self.code_window(self.window.len() - HELD_BACK);
        // The rest in place: from here on every match lies within the part.
        let mut at = usize::try_from(self.base + self.coded as u64 - part_base)
            .unwrap_or_else(|_| unreachable!("the part's offset fits its length"));
        let end = part.len() - HELD_BACK;
        while at < end {
            at = code_some(
                &mut self.block,
                &mut self.positions,
                part,
                part_base,
                at,
                end,
            );
            if self.block.is_full() {
                self.write_block(false);
            }
        }
        // The part's end is the history of what follows.
        let history_from = at - WINDOW;
        self.window.clear();
        self.window.extend_from_slice(&part[history_from..]);
        self.base = part_base + history_from as u64;
        self.coded = WINDOW;
    }

    /// The whole stream: the rest of the input, coded in a final block.
    pub fn finish(mut self) -> Vec<u8> {
        self.code_window(self.window.len());
        self.write_block(true);
        self.writer.align();
        self.writer.bytes
    }

    /// Codes the window up to `end` (its end, or far enough before it that
    /// the next part may still extend a match), a block at a time.
    fn code_window(&mut self, end: usize) {
        while self.coded < end {
            self.coded = code_some(
                &mut self.block,
                &mut self.positions,
                &self.window,
                self.base,
                self.coded,
                end,
            );
            if self.block.is_full() {
                self.write_block(false);
            }
        }
    }

    /// Codes the tokens gathered into one block, the last when `last`.
    fn write_block(&mut self, last: bool) {
        let mut litlen = self.block.litlen_frequencies;
        litlen[END_OF_BLOCK] = 1;
        let mut distance = self.block.distance_frequencies;
        // A decoder wants two codes at least in each code (as zlib writes them).
        for frequencies in [&mut litlen[..], &mut distance[..]] {
            let mut used = frequencies.iter().filter(|&&f| f > 0).count();
            for frequency in frequencies.iter_mut() {
                if used >= 2 {
                    break;
                }
                if *frequency == 0 {
                    *frequency = 1;
                    used += 1;
                }
            }
        }
        let litlen_code = Code::for_frequencies(&litlen, 15);
        let distance_code = Code::for_frequencies(&distance, 15);
        let header = CodeLengths::of(&litlen_code.lengths, &distance_code.lengths);
        let dynamic = header.cost() + litlen_code.cost(&litlen) + distance_code.cost(&distance);
        let (fixed_litlen, fixed_distance) = fixed_codes();
        let fixed = fixed_litlen.cost(&litlen) + fixed_distance.cost(&distance);
        self.writer.put(u32::from(last), 1);
        if fixed <= dynamic {
            self.writer.put(1, 2);
            self.write_tokens(&fixed_litlen, &fixed_distance);
        } else {
            self.writer.put(2, 2);
            header.write(&mut self.writer);
            self.write_tokens(&litlen_code, &distance_code);
        }
        self.block.tokens.clear();
        self.block.litlen_frequencies = [0; LITLEN_SYMBOLS];
        self.block.distance_frequencies = [0; DISTANCE_SYMBOLS];
    }

    fn write_tokens(&mut self, litlen: &Code<LITLEN_SYMBOLS>, distance: &Code<DISTANCE_SYMBOLS>) {
        // Each match length's code and extra bits, as one run of bits.
        let mut lengths = [(0u32, 0u32); 256];
        for (less_three, entry) in lengths.iter_mut().enumerate() {
            let symbol = usize::from(LENGTH_SYMBOL[less_three]);
            let code_length = u32::from(litlen.lengths[257 + symbol]);
            let extra = less_three as u32 + 3 - u32::from(LENGTH_BASE[symbol]);
            *entry = (
                u32::from(litlen.codes[257 + symbol]) | (extra << code_length),
                code_length + u32::from(LENGTH_EXTRA[symbol]),
            );
        }
        let literals: [(u32, u32); 256] = std::array::from_fn(|byte| {
            (
                u32::from(litlen.codes[byte]),
                u32::from(litlen.lengths[byte]),
            )
        });
        let writer = &mut self.writer;
        // At most 48 bits a token.
        writer.bytes.reserve(self.block.tokens.len() * 6 + 8);
        // The pending bits stay in registers through the loop.
        let (mut pending, mut count) = (writer.pending, writer.count);
        let bytes = &mut writer.bytes;
        let mut put = |bits: u32, length: u32| {
            pending |= u64::from(bits) << count;
            count += length;
            if count >= 32 {
                bytes.extend_from_slice(&(pending as u32).to_le_bytes());
                pending >>= 32;
                count -= 32;
            }
        };
        for &Token(token) in &self.block.tokens {
            if token & MATCH_FLAG == 0 {
                let (bits, length) = literals[(token & 0xff) as usize];
                put(bits, length);
                continue;
            }
            let (bits, length) = lengths[((token >> 16) & 0xff) as usize];
            put(bits, length);
            let less_one = token & 0xffff;
            // (The remainder only tells the compiler the index is in bounds.)
            let symbol = ((token >> 24) & 0x1f) as usize % DISTANCE_SYMBOLS;
            let extra = less_one + 1 - u32::from(DISTANCE_BASE[symbol]);
            let code_length = u32::from(distance.lengths[symbol]);
            put(
                u32::from(distance.codes[symbol]) | (extra << code_length),
                code_length + u32::from(DISTANCE_EXTRA[symbol]),
            );
        }
        (writer.pending, writer.count) = (pending, count);
        litlen.put(writer, END_OF_BLOCK);
    }
}

/// Codes `input` (whose first byte is at `base` in the stream) from `at`
/// towards `end` until a block is full, into `block`; where it stopped (at
/// `end` or past it, by a match, unless the block filled first). Input from
/// `end` to the input's end is only looked at by matches, unless `end` is
/// the input's end, when all of it is coded.
fn code_some(
    block: &mut Block,
    positions: &mut [u32; 1 << HASH_BITS],
    input: &[u8],
    base: u64,
    at: usize,
    end: usize,
) -> usize {
    let mut at = at;
    let mut literals_from = at;
    // Matches are sought where eight bytes can be read.
    let search_end = end.min(input.len().saturating_sub(8));
    while at < search_end {
        // SAFETY: `at < search_end <= input.len() - 8`.
        let word = unsafe { word_at(input, at) };
        let slot = hash(word);
        let position = (base + at as u64) as u32;
        let seen = positions[slot];
        positions[slot] = position;
        let distance = position.wrapping_sub(seen) as usize;
        // A slot may hold a position from any earlier input, or none (0): it
        // is taken only within reach and when its bytes are the same.
        let from = at.wrapping_sub(distance);
        let in_reach = distance != 0 && distance <= WINDOW && distance <= at;
        // SAFETY: in reach, `from < at`, and the eight bytes at `at` lie
        // in the input.
        if !in_reach || (unsafe { word_at(input, from) } ^ word) & 0xFFFF_FFFF != 0 {
            at += 1;
            // A block holds a bounded run of literals too: input without
            // matches costs memory in proportion to one block, not to itself.
            if at - literals_from >= BLOCK_TOKENS {
                break;
            }
            continue;
        }
        // Extend forwards, eight bytes at a time, within the input.
        let mut length = MIN_MATCH;
        if at + MAX_MATCH + 8 <= input.len() {
            // The usual case: the longest match and a word past it lie in the input.
            while length < MAX_MATCH {
                // SAFETY: `at + length + 8 <= at + MAX_MATCH + 8 <= input.len()`,
                // and `from < at`.
                let difference =
                    unsafe { word_at(input, from + length) ^ word_at(input, at + length) };
                if difference != 0 {
                    length += difference.trailing_zeros() as usize / 8;
                    break;
                }
                length += 8;
            }
            length = length.min(MAX_MATCH);
        } else {
            let limit = MAX_MATCH.min(input.len() - at);
            while length < limit && input[from + length] == input[at + length] {
                length += 1;
            }
        }
        // And backwards, over the literals waiting.
        let mut start = at;
        while start > literals_from
            && start > distance
            && length < MAX_MATCH
            && input[start - 1] == input[start - 1 - distance]
        {
            start -= 1;
            length += 1;
        }
        block.push_literals(&input[literals_from..start]);
        block.push_match(length, distance);
        at = start + length;
        literals_from = at;
        // The position before the match's end: the next line often starts there.
        let before = at - 2;
        if before + 8 <= input.len() {
            // SAFETY: checked just above.
            let word = unsafe { word_at(input, before) };
            positions[hash(word)] = (base + before as u64) as u32;
        }
        if block.is_full() {
            break;
        }
    }
    // Past `search_end`, up to the input's end, everything is literal.
    let last = if at >= search_end && end == input.len() {
        end
    } else {
        at
    };
    block.push_literals(&input[literals_from..last]);
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn inflate(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(body)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn round_trip(parts: &[&[u8]]) {
        let mut deflate = Deflate::after(Vec::new());
        for part in parts {
            deflate.write(part);
        }
        assert_eq!(inflate(&deflate.finish()), parts.concat());
    }

    #[test]
    fn inputs_come_back() {
        round_trip(&[]);
        round_trip(&[b""]);
        round_trip(&[b"a"]);
        round_trip(&[b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]);
        let line = b"ractogateway_requests_total{model=\"m\",status=\"ok\"} 1.0\n";
        let text: Vec<u8> = line.iter().copied().cycle().take(1_000_000).collect();
        round_trip(&[&text]);
        round_trip(&[&text[..100], &text[100..70_000], &text[70_000..]]);
        let mut next = crate::test_random::xorshift(0x1234_5678);
        let noise: Vec<u8> = (0..300_000).map(|_| (next() >> 24) as u8).collect();
        for size in [10, 100, 1000, 5000, 20_000, 70_000, 140_000] {
            round_trip(&[&noise[..size]]);
        }
        round_trip(&[&noise]);
        let mixed: Vec<u8> = noise
            .chunks(37)
            .flat_map(|chunk| chunk.iter().chain(&line[..]).copied())
            .collect();
        round_trip(&[&mixed[..5], &mixed[5..200_000], &mixed[200_000..]]);
    }

    #[test]
    fn any_split_of_any_text_comes_back() {
        // Text of lines that repeat with small changes, as expositions are,
        // mixed with noise, cut into parts of every size around the limits
        // the encoder works with (a match's reach, its window).
        let mut next = crate::test_random::xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..60 {
            let mut text = Vec::new();
            let size = (next() % 400_000) as usize;
            while text.len() < size {
                match next() % 4 {
                    0 => text.extend((0..next() % 300).map(|_| next() as u8)),
                    1 => text.extend(std::iter::repeat_n(next() as u8, (next() % 600) as usize)),
                    _ => text.extend_from_slice(
                        format!(
                            "series_bucket{{model=\"m-{}\",le=\"{}\"}} {}\n",
                            next() % 50,
                            next() % 9,
                            next() % 3
                        )
                        .as_bytes(),
                    ),
                }
            }
            let mut parts = Vec::new();
            let mut rest = &text[..];
            while !rest.is_empty() {
                let cut = match next() % 5 {
                    0 => (next() % 16) as usize,
                    1 => MAX_MATCH + 8 + (next() % 3) as usize - 1,
                    2 => WINDOW + (next() % 3) as usize - 1,
                    _ => (next() % 200_000) as usize,
                }
                .min(rest.len());
                let (part, tail) = rest.split_at(cut);
                parts.push(part);
                rest = tail;
            }
            round_trip(&parts);
        }
    }
}
