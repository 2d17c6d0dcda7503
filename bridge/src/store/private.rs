//! The bridge's state is its user's alone (issue 12): `data_dir` and every
//! directory in it mode 0700, every file 0600. The bridge's own files are
//! created so ([`create_dir`], [`file_options`]); sled creates its files
//! with the process's umask, so [`restrict`] tightens what is there after
//! the database opens, and the 0700 directory keeps what sled writes later
//! (snapshots) out of others' reach whatever its mode.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

/// Mode of `data_dir` and every directory in it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in `data_dir`.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and its missing parents with [`DIR_MODE`], and gives
/// `path` itself that mode if it existed. Blocks.
pub fn create_dir(path: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        b.mode(DIR_MODE);
    }
    b.create(path)?;
    set_mode(path, DIR_MODE)
}

/// Options that create a file with [`FILE_MODE`] (write access; add the
/// rest).
pub fn file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(FILE_MODE);
    }
    o
}

/// Gives every directory under `root` (and `root`) [`DIR_MODE`] and every
/// file [`FILE_MODE`]. Symbolic links are left alone. Blocks.
pub fn restrict(root: &Path) -> io::Result<()> {
    set_mode(root, DIR_MODE)?;
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            restrict(&entry.path())?;
        } else if kind.is_file() {
            set_mode(&entry.path(), FILE_MODE)?;
        }
    }
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_and_tightens() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        create_dir(&d).unwrap();
        assert_eq!(mode(&t.path().join("a")), DIR_MODE);
        assert_eq!(mode(&d), DIR_MODE);
        let f = d.join("f");
        file_options().create(true).open(&f).unwrap();
        assert_eq!(mode(&f), FILE_MODE);

        // What someone else created wide open is tightened.
        let wide = d.join("wide");
        std::fs::create_dir(&wide).unwrap();
        std::fs::write(wide.join("g"), b"x").unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(wide.join("g"), std::fs::Permissions::from_mode(0o644)).unwrap();
        restrict(t.path()).unwrap();
        assert_eq!(mode(&wide), DIR_MODE);
        assert_eq!(mode(&wide.join("g")), FILE_MODE);
    }
}
