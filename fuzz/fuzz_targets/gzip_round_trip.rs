//! Bytes cut into parts (by the first byte) and compressed by our deflate as
//! one gzip member: zlib-rs inflates exactly the bytes given.
#![no_main]

use std::io::Read;

use gateway_metrics::formats::gzip::Gzip;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Some((cut, text)) = bytes.split_first() else {
        return;
    };
    let mut member = Gzip::new(text.len() / 8);
    // Parts of 1 to 256 bytes, as a renderer hands over lines and chunks.
    for part in text.chunks(usize::from(*cut) + 1) {
        member.write(part);
    }
    let body = member.finish();
    let mut inflated = Vec::with_capacity(text.len());
    flate2::read::GzDecoder::new(&body[..])
        .read_to_end(&mut inflated)
        .expect("zlib-rs inflates our gzip");
    assert!(
        inflated == text,
        "{} bytes in, {} out",
        text.len(),
        inflated.len()
    );
});
