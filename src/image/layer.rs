//! The rootfs as one image layer: a tar of the directory, gzip'd, with the
//! sha256 of both the tar (the diff id) and the gzip (the blob digest)
//! computed in the same pass.

use super::cache::hex;
use super::error::ImageError;
use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Digests and size of a written layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:` of the gzip file.
    pub digest: String,
    /// Bytes of the gzip file.
    pub size: u64,
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hashing<W>(inner: W) -> Hashing<W> {
    Hashing {
        inner,
        hash: Sha256::new(),
        bytes: 0,
    }
}

/// Writes `root` as a gzip'd tar to `out` (paths relative to `root`,
/// ownership and modes kept, symlinks stored as symlinks).
pub fn write_layer(root: &Path, out: &Path) -> Result<Layer, ImageError> {
    let io_err = ImageError::io("write the rootfs layer", out);
    write_layer_inner(root, out).map_err(io_err)
}

fn write_layer_inner(root: &Path, out: &Path) -> io::Result<Layer> {
    let file = hashing(BufWriter::new(File::create(out)?));
    let gz = GzEncoder::new(file, Compression::new(6));
    let mut tar = tar::Builder::new(hashing(gz));
    tar.follow_symlinks(false);
    // GNU sparse entries (type S) are refused by Docker's tar reader.
    tar.sparse(false);
    tar.mode(tar::HeaderMode::Complete);
    tar.append_dir_all(".", root)?;
    let tar_hash = tar.into_inner()?;
    let diff_id = format!("sha256:{}", hex(&tar_hash.hash.finalize()));
    let mut file = tar_hash.inner.finish()?;
    file.flush()?;
    Ok(Layer {
        diff_id,
        digest: format!("sha256:{}", hex(&file.hash.finalize())),
        size: file.bytes,
    })
}

/// sha256 of `bytes` as `sha256:<hex>`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Bytes of regular files under `dir`, not following symlinks.
pub fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read as _;

    #[test]
    fn digests_match_the_bytes_written() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/bin/python3"), b"#!").unwrap();
        std::os::unix::fs::symlink("python3", root.join("usr/bin/python")).unwrap();
        let out = dir.path().join("layer.tar.gz");
        let layer = write_layer(&root, &out).unwrap();
        let gz = std::fs::read(&out).unwrap();
        assert_eq!(layer.digest, digest_of(&gz));
        assert_eq!(layer.size, gz.len() as u64);
        let mut tar = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut tar).unwrap();
        assert_eq!(layer.diff_id, digest_of(&tar));
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert!(
            names.iter().any(|n| n.ends_with("usr/bin/python")),
            "{names:?}"
        );
        assert_eq!(tree_size(&root), 2);
    }
}
