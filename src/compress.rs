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

/// Undo [`compress`] into `dst`, which must come out exactly full (its length is the raw
/// length the authenticated header promises); anything else is an error.
pub fn decompress_into(compression: Compression, src: &[u8], dst: &mut [u8]) -> Result<(), String> {
    let n = match compression {
        Compression::None if src.len() == dst.len() => {
            dst.copy_from_slice(src);
            src.len()
        }
        Compression::None => src.len(),
        Compression::Zstd => DECOMPRESSOR.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
            }
            d.as_mut()
                .expect("initialized above")
                .decompress_to_buffer(src, dst)
                .map_err(|e| format!("zstd: {e}"))
        })?,
    };
    if n != dst.len() {
        return Err(format!(
            "decompressed to {n} bytes, header says {}",
            dst.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_raw_fallback() {
        let text = b"INSERT INTO t VALUES (1);\n".repeat(1000);
        let c = compress(3, &text).unwrap();
        assert!(c.len() < text.len());
        let mut out = vec![0u8; text.len()];
        decompress_into(Compression::Zstd, &c, &mut out).unwrap();
        assert_eq!(out, text);
        let noise: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        assert!(compress(3, &noise).is_none_or(|c| c.len() < noise.len()));
    }

    #[test]
    fn bounded_decompression() {
        let text = vec![0u8; 1 << 20];
        let c = compress(3, &text).unwrap();
        let mut half = vec![0u8; 1 << 20];
        assert!(decompress_into(Compression::Zstd, &c[..c.len() / 2], &mut half).is_err());
        let mut dst = vec![1u8; 1 << 20];
        decompress_into(Compression::Zstd, &c, &mut dst).unwrap();
        assert_eq!(dst, text);
        let mut short = vec![0u8; 1000];
        assert!(decompress_into(Compression::Zstd, &c, &mut short).is_err());
        let mut long = vec![0u8; (1 << 20) + 1];
        assert!(decompress_into(Compression::Zstd, &c, &mut long).is_err());
        assert!(decompress_into(Compression::None, &c, &mut long).is_err());
    }
}
