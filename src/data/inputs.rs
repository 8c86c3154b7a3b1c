//! The inputs of `data prepare`: which files, with which class, read into documents.
//!
//! An input is a text file, a folder (every file under it, recursively, hidden ones
//! skipped), a glob (`corpus/*.txt`), or a CSV file (`.csv`) of `filename,fileid` lines
//! whose ids become class ids (for spout `onehot`); file names in a CSV are relative to its
//! folder and an optional first line `filename,fileid` is a header. Files are taken in a
//! fixed order (sorted within folders and globs) so the output depends on nothing else.
//!
//! A file is split into documents at blank lines; the lines of a document are joined with
//! `<BR>` and lines are trimmed (as the original's `line.strip()`).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// One file to read and the class of its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputFile {
    pub path: PathBuf,
    pub class_id: u32,
}

/// The files of every input, in order. Any input that names nothing is an error.
pub fn resolve(inputs: &[String]) -> Result<Vec<InputFile>> {
    let mut files = Vec::new();
    for input in inputs {
        let path = Path::new(input);
        if path.is_dir() {
            let found = folder_files(path)?;
            if found.is_empty() {
                bail!("{input}: the folder holds no file");
            }
            files.extend(
                found
                    .into_iter()
                    .map(|path| InputFile { path, class_id: 0 }),
            );
        } else if path.is_file() && is_csv(path) {
            files.extend(read_csv(path)?);
        } else if path.is_file() {
            files.push(InputFile {
                path: path.to_path_buf(),
                class_id: 0,
            });
        } else if input.contains(['*', '?', '[']) {
            let found = glob_files(input)?;
            files.extend(
                found
                    .into_iter()
                    .map(|path| InputFile { path, class_id: 0 }),
            );
        } else {
            bail!("{input}: no such file or folder");
        }
    }
    Ok(files)
}

fn is_csv(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

/// Every non-hidden file under `dir`, sorted by path.
fn folder_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?;
        for e in entries {
            let e = e.with_context(|| format!("cannot list {}", d.display()))?;
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn glob_files(pattern: &str) -> Result<Vec<PathBuf>> {
    let paths = glob::glob(pattern).with_context(|| format!("{pattern}: not a valid glob"))?;
    let mut out = Vec::new();
    for p in paths {
        let p = p.with_context(|| format!("{pattern}: cannot read a match"))?;
        if p.is_file() {
            out.push(p);
        }
    }
    if out.is_empty() {
        bail!("{pattern}: no file matches");
    }
    out.sort();
    Ok(out)
}

/// `filename,fileid` lines; every file must exist and every id be a non-negative integer.
fn read_csv(csv: &Path) -> Result<Vec<InputFile>> {
    let name = csv.display().to_string();
    let bytes = std::fs::read(csv).with_context(|| format!("reading {name}"))?;
    let text = crate::corpus::utf8_text(bytes, &name)?;
    let base = csv.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.replace(' ', "") == "filename,fileid") {
            continue;
        }
        let n = i + 1;
        let (file, id) = line
            .rsplit_once(',')
            .with_context(|| format!("{name}: line {n}: expected filename,fileid"))?;
        let class_id: u32 = id.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "{name}: line {n}: file id {:?} is not a non-negative integer",
                id.trim()
            )
        })?;
        let path = base.join(file.trim());
        if !path.is_file() {
            bail!("{name}: line {n}: {} does not exist", path.display());
        }
        out.push(InputFile { path, class_id });
    }
    if out.is_empty() {
        bail!("{name}: lists no file");
    }
    Ok(out)
}

/// A file's text and its documents, each a list of the byte ranges of its lines (so the
/// lines are never copied out one by one).
pub struct FileDocuments {
    text: String,
    docs: Vec<Vec<std::ops::Range<usize>>>,
}

impl FileDocuments {
    /// Splits `text` into documents (see [`split_documents`]).
    pub fn new(text: String) -> Self {
        let docs = document_ranges(&text);
        FileDocuments { text, docs }
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// The lines of document `d < len()`.
    pub fn lines(&self, d: usize) -> Vec<&str> {
        self.docs[d].iter().map(|r| &self.text[r.clone()]).collect()
    }
}

/// The documents of a file: runs of non-blank, trimmed lines. Unreadable files and invalid
/// UTF-8 are errors naming the file (and the line).
pub fn read_documents(path: &Path) -> Result<FileDocuments> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {name}"))?;
    let text = crate::corpus::utf8_text(bytes, &name)?;
    Ok(FileDocuments::new(text))
}

/// Splits text at blank lines into documents of trimmed lines.
pub fn split_documents(text: &str) -> Vec<Vec<&str>> {
    document_ranges(text)
        .into_iter()
        .map(|doc| doc.into_iter().map(|r| &text[r]).collect())
        .collect()
}

/// [`split_documents`] as byte ranges of `text`.
fn document_ranges(text: &str) -> Vec<Vec<std::ops::Range<usize>>> {
    let mut docs = Vec::new();
    let mut cur = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            if !cur.is_empty() {
                docs.push(std::mem::take(&mut cur));
            }
        } else {
            let start = line.as_ptr() as usize - text.as_ptr() as usize;
            cur.push(start..start + line.len());
        }
    }
    if !cur.is_empty() {
        docs.push(cur);
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_separate_documents_and_lines_are_trimmed() {
        let docs = split_documents("　一行目\r\n二行目 \n\n\n三行目\n");
        assert_eq!(docs, vec![vec!["一行目", "二行目"], vec!["三行目"]]);
    }

    #[test]
    fn csv_ids_become_class_ids() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a.txt"), "あ").unwrap();
        std::fs::write(dir.path().join("sub/b.txt"), "い").unwrap();
        let csv = dir.path().join("list.csv");
        std::fs::write(&csv, "filename,fileid\na.txt,3\nsub/b.txt, 7\n").unwrap();
        let files = resolve(&[csv.display().to_string()]).unwrap();
        assert_eq!(
            files,
            vec![
                InputFile {
                    path: dir.path().join("a.txt"),
                    class_id: 3
                },
                InputFile {
                    path: dir.path().join("sub/b.txt"),
                    class_id: 7
                },
            ]
        );
    }

    #[test]
    fn bad_csv_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "あ").unwrap();
        let csv = dir.path().join("list.csv");
        std::fs::write(&csv, "a.txt,1\nmissing.txt,2\n").unwrap();
        let err = resolve(&[csv.display().to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("missing.txt"),
            "{err}"
        );
        std::fs::write(&csv, "a.txt,one\n").unwrap();
        let err = resolve(&[csv.display().to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("\"one\""), "{err}");
    }

    #[test]
    fn folders_and_globs_are_sorted_and_recursive() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("x/y")).unwrap();
        for f in ["x/b.txt", "x/a.txt", "x/y/c.txt", "x/.hidden"] {
            std::fs::write(d.join(f), "う").unwrap();
        }
        let files = resolve(&[d.join("x").display().to_string()]).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(
            names,
            vec![d.join("x/a.txt"), d.join("x/b.txt"), d.join("x/y/c.txt")]
        );
        let files = resolve(&[format!("{}/x/*.txt", d.display())]).unwrap();
        assert_eq!(files.len(), 2);
        let err = resolve(&[format!("{}/x/*.md", d.display())]).unwrap_err();
        assert!(err.to_string().contains("no file matches"));
        let err = resolve(&[d.join("nope.txt").display().to_string()]).unwrap_err();
        assert!(err.to_string().contains("no such file"));
    }
}
