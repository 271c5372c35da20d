//! The durable high-water mark: what a store acknowledged, kept outside sled, so that a store
//! holding less than that is refused instead of started (issue 8, item 8).
//!
//! sled 0.34 treats a bad record as the end of its log: on open it drops everything after it,
//! zeroes the rest of that segment and writes a new snapshot. A damaged store would then start
//! with fewer records than it acknowledged, and the evidence would be gone. Two checks, both made
//! before sled is handed the files:
//!
//! - **After a clean stop** the mark holds a fingerprint (total length and CRC-32) of every file
//!   sled owns, taken once sled had closed them. Any change to those files while the store was
//!   stopped refuses it. Cost: one read of sled's files at start.
//! - **After a crash** (no clean fingerprint) the check uses a sequence number: before each group
//!   commit's flush, the flusher writes `seq` into sled (after every write the flush covers, so it
//!   lies later in sled's log than all of them), flushes, fsyncs, answers the writers, then
//!   records `seq` in the mark and fsyncs it. sled recovers a prefix of its log, so if it
//!   recovers `seq` it recovered every write that group acknowledged. The mark is written after
//!   the answers to keep it off the ack path (measured: written before them it added about 50%
//!   to a lone writer's latency); the price is that the last group acknowledged before a crash
//!   may not be covered yet. The check opens a *copy* of sled's
//!   files in `DIR/inflight-verify.tmp/` (sled rewrites on open), requires `seq` there to be at
//!   least the mark's and reads every record (a damaged page older than sled's snapshot only shows
//!   when read), then deletes the copy. Cost: a copy and a full read of the store, only after an
//!   unclean stop. More in sled than the mark (writes after the last mark) is normal after a crash.
//!
//! The mark is a small fixed-size file with two checksummed slots written alternately in place
//! (one `pwrite` + `fdatasync` of a tiny file per group commit, no metadata change); a torn write
//! spoils only the slot being written, and the other holds the previous, lower mark.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Name of the mark file, next to sled's files.
pub(crate) const MARK_FILE: &str = "INFLIGHT_DURABLE";
/// Key, in sled's default tree, holding the sequence number of the latest group commit.
pub(crate) const SEQ_KEY: &[u8] = b"__inflight_durable_seq";
/// Folder, inside the store's, where a copy is checked after an unclean stop.
pub(crate) const VERIFY_DIR: &str = "inflight-verify.tmp";

const MAGIC: &[u8; 8] = b"INFLDUR1";
/// Slots sit in different 4 KiB blocks, so that a torn write of one cannot spoil the other.
const SLOT_STRIDE: u64 = 4096;
const SLOT_LEN: usize = 8 + 8 + 8 + 1 + 8 + 4 + 4;
const FILE_LEN: u64 = 2 * SLOT_STRIDE;

/// One state of the mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    /// Write generation: the valid slot with the highest wins.
    pub(crate) generation: u64,
    /// Every acknowledged write lies before this sequence number in sled's log.
    pub(crate) seq: u64,
    /// Fingerprint of sled's files at a clean stop; `None` while the store is open (or crashed).
    pub(crate) clean: Option<Fingerprint>,
}

/// Total length and CRC-32 of sled's files (names, lengths and contents, in name order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub(crate) len: u64,
    pub(crate) crc: u32,
}

impl Record {
    fn encode(&self) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.generation.to_be_bytes());
        b[16..24].copy_from_slice(&self.seq.to_be_bytes());
        let fp = self.clean.unwrap_or(Fingerprint { len: 0, crc: 0 });
        b[24] = u8::from(self.clean.is_some());
        b[25..33].copy_from_slice(&fp.len.to_be_bytes());
        b[33..37].copy_from_slice(&fp.crc.to_be_bytes());
        let crc = crc32fast::hash(&b[..37]);
        b[37..41].copy_from_slice(&crc.to_be_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Record> {
        let u64_at = |i: usize| b.get(i..i + 8).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes);
        let u32_at = |i: usize| b.get(i..i + 4).and_then(|s| s.try_into().ok()).map(u32::from_be_bytes);
        if b.get(0..8) != Some(MAGIC.as_slice()) || u32_at(37)? != crc32fast::hash(b.get(..37)?) {
            return None;
        }
        let clean = match b[24] {
            0 => None,
            1 => Some(Fingerprint { len: u64_at(25)?, crc: u32_at(33)? }),
            _ => return None,
        };
        Some(Record { generation: u64_at(8)?, seq: u64_at(16)?, clean })
    }
}

/// Reads the mark: `Ok(None)` if there is no mark file, `Err` if it exists but no slot is valid.
pub(crate) fn read(dir: &Path) -> Result<Option<Record>, String> {
    let bytes = match std::fs::read(dir.join(MARK_FILE)) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {MARK_FILE}: {e}")),
    };
    let slot = |i: u64| {
        let start = usize::try_from(i * SLOT_STRIDE).ok()?;
        Record::decode(bytes.get(start..start + SLOT_LEN)?)
    };
    match (slot(0), slot(1)) {
        (Some(a), Some(b)) => Ok(Some(if a.generation >= b.generation { a } else { b })),
        (Some(r), None) | (None, Some(r)) => Ok(Some(r)),
        (None, None) => Err(format!("{MARK_FILE} is unreadable (both copies fail their checksum)")),
    }
}

/// The mark file, open for writing.
#[derive(Debug)]
pub(crate) struct Mark {
    file: File,
    last: Record,
}

impl Mark {
    /// Opens the mark in `dir`, creating it (and fsyncing the folder) if absent.
    pub(crate) fn open(dir: &Path) -> Result<Mark, String> {
        let last = read(dir)?;
        let path = dir.join(MARK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open {MARK_FILE}: {e}"))?;
        let last = match last {
            Some(r) => r,
            None => {
                let r = Record { generation: 0, seq: 0, clean: None };
                file.set_len(FILE_LEN).map_err(|e| format!("cannot size {MARK_FILE}: {e}"))?;
                let mut m = Mark { file, last: r };
                m.write(0, None)?;
                m.file.sync_all().map_err(|e| format!("cannot fsync {MARK_FILE}: {e}"))?;
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| format!("cannot fsync the store folder: {e}"))?;
                return Ok(m);
            }
        };
        Ok(Mark { file, last })
    }

    /// The latest state written.
    pub(crate) fn last(&self) -> Record {
        self.last
    }

    /// Durably records `seq` (and a clean fingerprint, at a clean stop) in the other slot.
    pub(crate) fn write(&mut self, seq: u64, clean: Option<Fingerprint>) -> Result<(), String> {
        let r = Record { generation: self.last.generation + 1, seq, clean };
        self.file
            .write_all_at(&r.encode(), (r.generation % 2) * SLOT_STRIDE)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| format!("cannot write {MARK_FILE}: {e}"))?;
        self.last = r;
        Ok(())
    }
}

/// Whether `name`, at the top of the store's folder, is one of sled's files.
fn is_sled_file(name: &str) -> bool {
    name == "db" || name == "conf" || name == "blobs" || name.starts_with("snap.")
}

/// Fingerprint of every file sled owns in `dir`.
pub(crate) fn fingerprint(dir: &Path) -> std::io::Result<Fingerprint> {
    let mut h = crc32fast::Hasher::new();
    let mut len = 0u64;
    let mut files = Vec::new();
    sled_files(dir, dir, &mut files)?;
    files.sort();
    let mut buf = vec![0u8; 1 << 20];
    for rel in files {
        let mut f = File::open(dir.join(&rel))?;
        let size = f.metadata()?.len();
        h.update(rel.to_string_lossy().as_bytes());
        h.update(&size.to_be_bytes());
        loop {
            let n = std::io::Read::read(&mut f, &mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            len += n as u64;
        }
    }
    Ok(Fingerprint { len, crc: h.finalize() })
}

/// Paths (relative to `root`) of sled's files under `dir`.
fn sled_files(root: &Path, dir: &Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        if dir == root && !is_sled_file(&e.file_name().to_string_lossy()) {
            continue;
        }
        if e.file_type()?.is_dir() {
            sled_files(root, &path, out)?;
        } else {
            out.push(path.strip_prefix(root).map_err(std::io::Error::other)?.to_owned());
        }
    }
    Ok(())
}

/// Copies sled's files from `from` into the new folder `to`.
pub(crate) fn copy_sled_files(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut files = Vec::new();
    sled_files(from, from, &mut files)?;
    std::fs::create_dir_all(to)?;
    for rel in files {
        let target = to.join(&rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from.join(&rel), target)?;
    }
    Ok(())
}

/// The sequence number sled holds (0 if never written).
pub(crate) fn sled_seq(db: &sled::Db) -> Result<u64, String> {
    match db.get(SEQ_KEY).map_err(|e| e.to_string())? {
        None => Ok(0),
        Some(v) => {
            let b: [u8; 8] = v.as_ref().try_into().map_err(|_| "the sequence number is malformed".to_owned())?;
            Ok(u64::from_be_bytes(b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_slot_falls_back_to_the_other_and_both_torn_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = Mark::open(dir.path()).expect("create");
        m.write(5, None).expect("write");
        m.write(6, Some(Fingerprint { len: 10, crc: 3 })).expect("write");
        let last = read(dir.path()).expect("read").expect("present");
        assert_eq!((last.seq, last.clean), (6, Some(Fingerprint { len: 10, crc: 3 })));
        let path = dir.path().join(MARK_FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        let at = usize::try_from((last.generation % 2) * SLOT_STRIDE).expect("fits") + 20;
        bytes[at] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        let r = read(dir.path()).expect("read").expect("present");
        assert_eq!((r.seq, r.clean), (5, None), "the torn newer slot is ignored");
        let other = usize::try_from(((last.generation + 1) % 2) * SLOT_STRIDE).expect("fits") + 20;
        bytes[other] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert!(read(dir.path()).is_err());
    }

    /// A store with `n` durable writes in `dir`, through the same path as the stores.
    fn store_with(dir: &Path, n: u32) -> (sled::Db, crate::Committer) {
        let db = crate::open_sled(dir, 1 << 20).expect("open");
        let c = crate::Committer::start(db.clone(), dir).expect("start");
        for i in 0..n {
            db.insert(i.to_be_bytes(), b"v".as_slice()).expect("insert");
            let t = c.note_write().expect("ticket");
            c.wait_blocking(t).expect("durable");
        }
        (db, c)
    }

    #[test]
    fn a_clean_stop_is_fingerprinted_only_once_sled_has_closed_its_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, c) = store_with(dir.path(), 3);
        drop(db);
        drop(c);
        let r = read(dir.path()).expect("read").expect("present");
        assert_eq!(r.seq, 3, "one group commit per durable write");
        assert_eq!(r.clean, Some(fingerprint(dir.path()).expect("fingerprint")));

        // sled still open elsewhere at stop: no fingerprint (the next start checks a copy).
        let (db, c) = store_with(dir.path(), 2);
        drop(c);
        assert_eq!(read(dir.path()).expect("read").expect("present").clean, None);
        drop(db);
        // ...and it opens after that check, holding what was written.
        let (db, c) = store_with(dir.path(), 0);
        assert_eq!(db.len(), 3 + 2, "keys 0..3, the creation key and the sequence number");
        assert_eq!(sled_seq(&db).expect("seq"), 5);
        drop(db);
        drop(c);
    }

    #[test]
    fn a_crash_image_holding_more_than_its_mark_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let live = dir.path().join("live");
        let (db, c) = store_with(&live, 5);
        let image = dir.path().join("image");
        copy_sled_files(&live, &image).expect("copy");
        for name in [MARK_FILE, crate::MARKER_FILE] {
            std::fs::copy(live.join(name), image.join(name)).expect("copy");
        }
        drop(db);
        drop(c);
        // A crash after sled's fsync and before the mark's: sled holds more than the mark says.
        Mark::open(&image).expect("open mark").write(3, None).expect("write");
        let db = crate::open_sled(&image, 1 << 20).expect("a store ahead of its mark opens");
        assert_eq!(sled_seq(&db).expect("seq"), 5);
        assert!(!image.join(VERIFY_DIR).exists(), "the checked copy is removed");
        // The mark behind sled's sequence number: a committer goes on from the larger.
        let c = crate::Committer::start(db.clone(), &image).expect("start");
        let t = c.note_write().expect("ticket");
        c.wait_blocking(t).expect("durable");
        // The mark is written after the waiters are answered (off their latency): wait for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while read(&image).expect("read").expect("present").seq < 6 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(read(&image).expect("read").expect("present").seq, 6);
        drop(db);
        drop(c);
    }
}
