//! Reading a shared file from a position of one's own (`pread`): a log's readers share the
//! descriptor of the file generation they planned on (compaction may put another file under
//! the log's name meanwhile), and a `seek` of one must never move another.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// A [`Read`] over `file` from `pos` on.
#[derive(Debug)]
pub struct FileReader {
    file: Arc<File>,
    pos: u64,
}

impl FileReader {
    pub fn new(file: Arc<File>, pos: u64) -> Self {
        Self { file, pos }
    }
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_readers_of_one_descriptor_keep_their_own_positions() {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut tmp, b"0123456789").unwrap();
        let file = Arc::new(File::open(tmp.path()).unwrap());
        let mut a = FileReader::new(file.clone(), 2);
        let mut b = FileReader::new(file, 7);
        let mut buf = [0u8; 2];
        a.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"23");
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"78");
        a.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"45");
    }
}
