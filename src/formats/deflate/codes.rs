//! RFC 1951's alphabets and their Huffman codes: the length and distance
//! symbols with their extra bits, canonical codes built for a block's symbol
//! frequencies (halved until no code is longer than the format allows), the
//! fixed codes, the code-length code a dynamic block's header is written in,
//! and the bit writer they all write with.

/// Literal/length symbols (256 is the end of a block).
pub(super) const LITLEN_SYMBOLS: usize = 286;

pub(super) const END_OF_BLOCK: usize = 256;

pub(super) const DISTANCE_SYMBOLS: usize = 30;

/// The code-length alphabet, and the order its lengths are sent in.
pub(super) const CODE_LENGTH_SYMBOLS: usize = 19;

pub(super) const CODE_LENGTH_ORDER: [usize; CODE_LENGTH_SYMBOLS] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// The first length of each length symbol (257 to 285) and its extra bits.
pub(super) const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];

pub(super) const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];

/// The first distance of each distance symbol and its extra bits.
pub(super) const DISTANCE_BASE: [u16; DISTANCE_SYMBOLS] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];

pub(super) const DISTANCE_EXTRA: [u8; DISTANCE_SYMBOLS] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// The length symbol (less 257) of each match length less three.
pub(super) const LENGTH_SYMBOL: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut symbol = 0;
    while symbol < 29 {
        let first = LENGTH_BASE[symbol] as usize - 3;
        // Length 258 has a symbol of its own, though 284's range reaches it.
        let last = if symbol == 27 {
            254
        } else if symbol == 28 {
            255
        } else {
            first + (1 << LENGTH_EXTRA[symbol]) - 1
        };
        let mut length = first;
        while length <= last {
            table[length] = symbol as u8;
            length += 1;
        }
        symbol += 1;
    }
    table
};

/// The distance symbol of `distance - 1`: from a table of 512, the upper
/// half indexed by the distance's bits above the seventh.
pub(super) const DISTANCE_SYMBOL: [u8; 512] = {
    let mut table = [0u8; 512];
    let mut symbol = 0;
    while symbol < DISTANCE_SYMBOLS {
        let first = DISTANCE_BASE[symbol] as usize - 1;
        let last = first + (1 << DISTANCE_EXTRA[symbol]) - 1;
        let mut distance = first;
        while distance <= last {
            if distance < 256 {
                table[distance] = symbol as u8;
            } else {
                table[256 + (distance >> 7)] = symbol as u8;
            }
            distance += 1;
        }
        symbol += 1;
    }
    table
};

#[inline]
pub(super) fn distance_symbol(distance_less_one: usize) -> usize {
    if distance_less_one < 256 {
        DISTANCE_SYMBOL[distance_less_one] as usize
    } else {
        DISTANCE_SYMBOL[256 + (distance_less_one >> 7)] as usize
    }
}

/// Bits written least significant first, as deflate packs them.
pub(super) struct BitWriter {
    pub(super) bytes: Vec<u8>,
    pub(super) pending: u64,
    pub(super) count: u32,
}

impl BitWriter {
    /// Appends the low `count` (at most 32) bits of `bits`.
    #[inline]
    pub(super) fn put(&mut self, bits: u32, count: u32) {
        debug_assert!(count <= 32 && (count == 32 || bits >> count == 0));
        self.pending |= u64::from(bits) << self.count;
        self.count += count;
        if self.count >= 32 {
            self.bytes
                .extend_from_slice(&(self.pending as u32).to_le_bytes());
            self.pending >>= 32;
            self.count -= 32;
        }
    }

    /// Pads to a whole byte and writes out what is pending.
    pub(super) fn align(&mut self) {
        while self.count > 0 {
            self.bytes.push(self.pending as u8);
            self.pending >>= 8;
            self.count = self.count.saturating_sub(8);
        }
        self.pending = 0;
    }
}

/// A prefix code: each symbol's code (bit-reversed, ready for
/// [`BitWriter::put`]) and its length.
pub(super) struct Code<const N: usize> {
    pub(super) codes: [u16; N],
    pub(super) lengths: [u8; N],
}

impl<const N: usize> Code<N> {
    /// The canonical code of `lengths` (RFC 1951, 3.2.2).
    pub(super) fn canonical(lengths: [u8; N]) -> Self {
        let mut per_length = [0u16; 16];
        for &length in &lengths {
            per_length[usize::from(length)] += 1;
        }
        per_length[0] = 0;
        let mut next = [0u16; 16];
        let mut code = 0u16;
        for bits in 1..16 {
            code = (code + per_length[bits - 1]) << 1;
            next[bits] = code;
        }
        let mut codes = [0u16; N];
        for (symbol, &length) in lengths.iter().enumerate() {
            if length > 0 {
                let code = next[usize::from(length)];
                next[usize::from(length)] += 1;
                codes[symbol] = code.reverse_bits() >> (16 - u32::from(length));
            }
        }
        Code { codes, lengths }
    }

    /// Lengths of a Huffman code for `frequencies`, none longer than `limit`.
    /// Frequencies are halved until the code fits: the usual case fits at once.
    pub(super) fn for_frequencies(frequencies: &[u32; N], limit: u8) -> Self {
        let mut weights = *frequencies;
        loop {
            let lengths = huffman_lengths(&weights);
            if lengths.iter().all(|&length| length <= limit) {
                return Code::canonical(lengths);
            }
            for weight in &mut weights {
                if *weight > 0 {
                    *weight = (*weight >> 1).max(1);
                }
            }
        }
    }

    /// The bits coding `frequencies` take with this code.
    pub(super) fn cost(&self, frequencies: &[u32; N]) -> u64 {
        frequencies
            .iter()
            .zip(&self.lengths)
            .map(|(&frequency, &length)| u64::from(frequency) * u64::from(length))
            .sum()
    }

    #[inline]
    pub(super) fn put(&self, writer: &mut BitWriter, symbol: usize) {
        writer.put(
            u32::from(self.codes[symbol]),
            u32::from(self.lengths[symbol]),
        );
    }
}

/// Huffman code lengths for `weights` (at least two of them non-zero), by
/// merging the two lightest of the leaves and the merged nodes, both kept in
/// order of weight.
pub(super) fn huffman_lengths<const N: usize>(weights: &[u32; N]) -> [u8; N] {
    let mut leaves: Vec<(u32, usize)> = weights
        .iter()
        .enumerate()
        .filter(|(_, &weight)| weight > 0)
        .map(|(symbol, &weight)| (weight, symbol))
        .collect();
    leaves.sort_unstable();
    let count = leaves.len();
    let mut lengths = [0u8; N];
    if count < 2 {
        // A lone symbol still takes one bit.
        for &(_, symbol) in &leaves {
            lengths[symbol] = 1;
        }
        return lengths;
    }
    // Nodes 0..count are the leaves, then the merged nodes in the order made.
    let mut weight: Vec<u64> = leaves.iter().map(|&(w, _)| u64::from(w)).collect();
    weight.resize(2 * count - 1, 0);
    let mut parent = vec![0usize; 2 * count - 1];
    let (mut leaf, mut merged, mut made) = (0, count, count);
    for _ in 0..count - 1 {
        let mut lightest = || {
            let take_leaf = leaf < count && (merged >= made || weight[leaf] <= weight[merged]);
            if take_leaf {
                leaf += 1;
                leaf - 1
            } else {
                merged += 1;
                merged - 1
            }
        };
        let (first, second) = (lightest(), lightest());
        weight[made] = weight[first] + weight[second];
        parent[first] = made;
        parent[second] = made;
        made += 1;
    }
    // A parent is made after its children: depths from the root down.
    let mut depth = vec![0u8; 2 * count - 1];
    for node in (0..2 * count - 2).rev() {
        depth[node] = depth[parent[node]].saturating_add(1);
    }
    for (node, &(_, symbol)) in leaves.iter().enumerate() {
        lengths[symbol] = depth[node];
    }
    lengths
}

/// The fixed codes of block type 1 (RFC 1951, 3.2.6).
pub(super) fn fixed_codes() -> (Code<LITLEN_SYMBOLS>, Code<DISTANCE_SYMBOLS>) {
    // The fixed code has 288 literal/length symbols, two never sent: they
    // still take their places among the 8-bit codes.
    let mut lengths = [0u8; 288];
    for (symbol, length) in lengths.iter_mut().enumerate() {
        *length = match symbol {
            144..=255 => 9,
            256..=279 => 7,
            _ => 8,
        };
    }
    let all = Code::canonical(lengths);
    let mut litlen = Code {
        codes: [0; LITLEN_SYMBOLS],
        lengths: [0; LITLEN_SYMBOLS],
    };
    litlen.codes.copy_from_slice(&all.codes[..LITLEN_SYMBOLS]);
    litlen
        .lengths
        .copy_from_slice(&all.lengths[..LITLEN_SYMBOLS]);
    (litlen, Code::canonical([5; DISTANCE_SYMBOLS]))
}

/// A dynamic block's code lengths, run-length coded (RFC 1951, 3.2.7).
pub(super) struct CodeLengths {
    /// `(symbol, extra bits, extra count)` of the code-length alphabet.
    pub(super) symbols: Vec<(u8, u8, u8)>,
    pub(super) code: Code<CODE_LENGTH_SYMBOLS>,
    pub(super) litlen_count: usize,
    pub(super) distance_count: usize,
    pub(super) order_count: usize,
}

impl CodeLengths {
    pub(super) fn of(litlen: &[u8; LITLEN_SYMBOLS], distance: &[u8; DISTANCE_SYMBOLS]) -> Self {
        let litlen_count = 257
            + litlen[257..]
                .iter()
                .rposition(|&l| l > 0)
                .map_or(0, |at| at + 1);
        let distance_count = distance.iter().rposition(|&l| l > 0).map_or(1, |at| at + 1);
        let lengths: Vec<u8> = litlen[..litlen_count]
            .iter()
            .chain(&distance[..distance_count])
            .copied()
            .collect();
        let mut symbols = Vec::new();
        let mut at = 0;
        while at < lengths.len() {
            let length = lengths[at];
            let run = lengths[at..].iter().take_while(|&&l| l == length).count();
            if length == 0 && run >= 3 {
                let run = run.min(138);
                if run >= 11 {
                    symbols.push((18, (run - 11) as u8, 7));
                } else {
                    symbols.push((17, (run - 3) as u8, 3));
                }
                at += run;
            } else if length != 0 && run >= 4 {
                symbols.push((length, 0, 0));
                let repeats = (run - 1).min(6);
                symbols.push((16, (repeats - 3) as u8, 2));
                at += 1 + repeats;
            } else {
                symbols.push((length, 0, 0));
                at += 1;
            }
        }
        let mut frequencies = [0u32; CODE_LENGTH_SYMBOLS];
        for &(symbol, _, _) in &symbols {
            frequencies[usize::from(symbol)] += 1;
        }
        let mut used = frequencies.iter().filter(|&&f| f > 0).count();
        for frequency in &mut frequencies {
            if used >= 2 {
                break;
            }
            if *frequency == 0 {
                *frequency = 1;
                used += 1;
            }
        }
        let code = Code::for_frequencies(&frequencies, 7);
        let order_count = 4.max(
            CODE_LENGTH_ORDER
                .iter()
                .rposition(|&symbol| code.lengths[symbol] > 0)
                .map_or(0, |at| at + 1),
        );
        CodeLengths {
            symbols,
            code,
            litlen_count,
            distance_count,
            order_count,
        }
    }

    /// The bits of the header: counts, the code-length code, the lengths.
    pub(super) fn cost(&self) -> u64 {
        let coded: u64 = self
            .symbols
            .iter()
            .map(|&(symbol, _, extra)| {
                u64::from(self.code.lengths[usize::from(symbol)]) + u64::from(extra)
            })
            .sum();
        14 + 3 * self.order_count as u64 + coded
    }

    pub(super) fn write(&self, writer: &mut BitWriter) {
        writer.put((self.litlen_count - 257) as u32, 5);
        writer.put((self.distance_count - 1) as u32, 5);
        writer.put((self.order_count - 4) as u32, 4);
        for &symbol in &CODE_LENGTH_ORDER[..self.order_count] {
            writer.put(u32::from(self.code.lengths[symbol]), 3);
        }
        for &(symbol, extra, count) in &self.symbols {
            self.code.put(writer, usize::from(symbol));
            writer.put(u32::from(extra), u32::from(count));
        }
    }
}
