//! zstd compression of blobs. A blob is stored uncompressed when zstd does not make it smaller,
//! so already-compressed dumps cost no CPU on restore. Decompression is bounded by the length
//! the (authenticated) pack header promises, so a hostile blob cannot inflate memory.

use std::cell::RefCell;

use crate::format::pack::Compression;

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Compress `data`; returns `None` when storing it raw is at least as small.
pub fn compress(level: i32, data: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, comp) = c.as_mut()?;
        let out = comp.compress(data).ok()?;
        (out.len() < data.len()).then_some(out)
    })
}

/// Undo [`compress`]; the result is exactly `raw_len` bytes or an error.
pub fn decompress(
    compression: Compression,
    data: Vec<u8>,
    raw_len: usize,
) -> Result<Vec<u8>, String> {
    let out = match compression {
        Compression::None => data,
        Compression::Zstd => DECOMPRESSOR.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
            }
            d.as_mut()
                .expect("initialized above")
                .decompress(&data, raw_len)
                .map_err(|e| format!("zstd: {e}"))
        })?,
    };
    if out.len() != raw_len {
        return Err(format!(
            "decompressed to {} bytes, header says {raw_len}",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_raw_fallback() {
        let text = b"INSERT INTO t VALUES (1);\n".repeat(1000);
        let c = compress(3, &text).unwrap();
        assert!(c.len() < text.len());
        assert_eq!(decompress(Compression::Zstd, c, text.len()).unwrap(), text);
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert!(compress(3, &noise).is_none_or(|c| c.len() < noise.len()));
    }

    #[test]
    fn bounded_decompression() {
        let text = vec![0u8; 1 << 20];
        let c = compress(3, &text).unwrap();
        assert!(decompress(Compression::Zstd, c.clone(), 1000).is_err());
        assert!(decompress(Compression::Zstd, c[..c.len() / 2].to_vec(), 1 << 20).is_err());
    }
}
