//! [`FsStorage`]: the real file system, with memmap2 mappings.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use memmap2::MmapMut;

use super::{IndexMap, Storage, StorageFile};
use crate::mmap;

/// Files on the local file system; reads are memory-mapped.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsStorage;

#[derive(Debug)]
struct FsFile {
    file: File,
    #[allow(dead_code)]
    path: PathBuf,
}

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Box<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path)?;
        Ok(Box::new(FsFile { file, path: path.to_path_buf() }))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir_all(dir)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

impl StorageFile for FsFile {
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.file.as_fd())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, pos)
    }

    fn write_all_at(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, pos)
    }

    fn write_all_vectored_at(&self, pos: u64, parts: &[&[u8]]) -> io::Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut written = 0usize;
        while written < total {
            // The parts not yet (fully) written, after a short write.
            let mut skip = written;
            let slices: Vec<io::IoSlice<'_>> = parts
                .iter()
                .filter_map(|p| {
                    if skip >= p.len() {
                        skip -= p.len();
                        None
                    } else {
                        let rest = &p[skip..];
                        skip = 0;
                        Some(io::IoSlice::new(rest))
                    }
                })
                .collect();
            match rustix::io::pwritev(&self.file, &slices, pos + written as u64) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        // Claim the blocks now (unlike `set_len`, which leaves a hole), so a
        // full disk shows up here as an error and not later as SIGBUS when
        // the mapped index is written. fallocate(2) does it without writing;
        // where the filesystem lacks it, zeros are written instead.
        let old = self.len()?;
        if len <= old {
            return self.file.set_len(len);
        }
        match rustix::fs::fallocate(&self.file, rustix::fs::FallocateFlags::empty(), old, len - old) {
            Ok(()) => return Ok(()),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {}
            Err(e) => {
                let _ = self.file.set_len(old);
                return Err(e.into());
            }
        }
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut pos = old;
        while pos < len {
            let n = (len - pos).min(ZEROS.len() as u64) as usize;
            if let Err(e) = self.file.write_all_at(&ZEROS[..n], pos) {
                let _ = self.file.set_len(old);
                return Err(e);
            }
            pos += n as u64;
        }
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn modified_ms(&self) -> io::Result<Option<i64>> {
        let modified = self.file.metadata()?.modified()?;
        Ok(modified.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_millis() as i64))
    }

    fn map(&self, len: u64) -> io::Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let len = usize::try_from(len).map_err(|_| io::Error::other("mapping too large"))?;
        let map = mmap::map_read_only(&self.file, len)?;
        Ok(Bytes::from_owner(map))
    }

    fn map_mut(&self, len: u64) -> io::Result<Box<dyn IndexMap>> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("mapping too large"))?;
        let map = if len == 0 { None } else { Some(mmap::map_read_write(&self.file, len)?) };
        Ok(Box::new(FsIndexMap { map }))
    }
}

#[derive(Debug)]
struct FsIndexMap {
    map: Option<MmapMut>,
}

impl IndexMap for FsIndexMap {
    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.map.as_deref_mut().unwrap_or(&mut [])
    }

    fn flush(&self) -> io::Result<()> {
        match &self.map {
            Some(m) => m.flush(),
            None => Ok(()),
        }
    }
}
