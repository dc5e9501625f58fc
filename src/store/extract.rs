//! Files into text: PDF (its text layer, page by page), DOCX, PPTX, HTML,
//! Markdown and plain text, each with where its pages and headings start,
//! so that every chunk cut from it can say where it came from.
//!
//! The format is read from the content (PDF's `%PDF-`, the members of an
//! Office file's zip archive, an HTML document's opening tag); the file
//! name only tells Markdown from plain text. The crates: `pdf-extract`
//! (over `lopdf`) for PDF, `zip` and `quick-xml` for the Office files'
//! XML, `html2text` for HTML.

use super::chunking::TextKind;
use crate::error::{Error, Result};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A document format hearth reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pdf,
    Docx,
    Pptx,
    Html,
    Markdown,
    Text,
}

/// A file's text and where its parts start.
#[derive(Debug, Clone, Default)]
pub struct Extracted {
    pub text: String,
    pub kind: TextKind,
    pub title: Option<String>,
    /// The byte offset at which each page (PDF) or slide (PPTX) starts,
    /// in order: page `i + 1` starts at `pages[i]`.
    pub pages: Vec<usize>,
    /// Headings, as (byte offset of the heading, its text), in order.
    pub headings: Vec<(usize, String)>,
}

impl Extracted {
    /// Plain text or Markdown given as text, with Markdown's headings.
    pub fn from_text(text: String, kind: TextKind) -> Self {
        let headings = match kind {
            TextKind::Markdown => markdown_headings(&text),
            TextKind::Plain => Vec::new(),
        };
        let title = headings.first().map(|(_, h)| h.clone());
        Self {
            text,
            kind,
            title,
            pages: Vec::new(),
            headings,
        }
    }

    /// The page (1-based) and heading in force at byte `offset`.
    pub fn place(&self, offset: usize) -> (Option<u32>, Option<String>) {
        let page = match self.pages.partition_point(|&start| start <= offset) {
            0 if self.pages.is_empty() => None,
            0 => Some(1),
            n => Some(n as u32),
        };
        let heading = match self.headings.partition_point(|(start, _)| *start <= offset) {
            0 => None,
            n => Some(self.headings[n - 1].1.clone()),
        };
        (page, heading)
    }
}

/// The message for a PDF without a text layer (a scan).
pub const NO_TEXT: &str =
    "the PDF has no extractable text (a scanned document?); OCR is not supported";

/// Read `bytes` as the format its content shows; `name` (a file name)
/// tells Markdown from plain text, and `hint` (a client's `format`) is
/// checked against the content. `Error::Unreadable` for a file that is
/// not one of the formats, is damaged, or holds no text.
pub fn extract(bytes: &[u8], name: Option<&str>, hint: Option<Format>) -> Result<Extracted> {
    let sniffed = sniff(bytes, name)?;
    let format = match (hint, sniffed) {
        // Text may be given as any of the text formats.
        (
            Some(h @ (Format::Markdown | Format::Text | Format::Html)),
            Format::Markdown | Format::Text | Format::Html,
        ) => h,
        (Some(h), s) if h != s => {
            return Err(Error::Unreadable(format!(
                "the file was said to be {h:?} but its content is {s:?}"
            )))
        }
        (_, s) => s,
    };
    let extracted = match format {
        Format::Pdf => pdf(bytes)?,
        Format::Docx => docx(bytes)?,
        Format::Pptx => pptx(bytes)?,
        Format::Html => html(utf8(bytes)?)?,
        Format::Markdown => Extracted::from_text(utf8(bytes)?.to_string(), TextKind::Markdown),
        Format::Text => Extracted::from_text(utf8(bytes)?.to_string(), TextKind::Plain),
    };
    if extracted.text.trim().is_empty() {
        return Err(Error::Unreadable(match format {
            Format::Pdf => NO_TEXT.to_string(),
            _ => "the file holds no text".to_string(),
        }));
    }
    Ok(extracted)
}

/// The format `bytes` are in.
pub fn sniff(bytes: &[u8], name: Option<&str>) -> Result<Format> {
    // PDF readers accept the header anywhere in the first 1024 bytes.
    let head = &bytes[..bytes.len().min(1024)];
    if head.windows(5).any(|w| w == b"%PDF-") {
        return Ok(Format::Pdf);
    }
    if bytes.starts_with(b"PK\x03\x04") {
        let archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
            .map_err(|e| Error::Unreadable(format!("a damaged zip archive: {e}")))?;
        let has = |member: &str| archive.index_for_name(member).is_some();
        return if has("word/document.xml") {
            Ok(Format::Docx)
        } else if has("ppt/presentation.xml") {
            Ok(Format::Pptx)
        } else if has("xl/workbook.xml") {
            Err(Error::Unreadable(
                "spreadsheets (XLSX) are not supported; export the sheet as CSV text".into(),
            ))
        } else {
            Err(Error::Unreadable(
                "a zip archive that is not a DOCX or PPTX file".into(),
            ))
        };
    }
    let text = utf8(bytes)?;
    let extension = name
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase());
    let start = text
        .trim_start()
        .get(..15)
        .unwrap_or("")
        .to_ascii_lowercase();
    Ok(
        if start.starts_with("<!doctype html") || start.starts_with("<html") {
            Format::Html
        } else {
            match extension.as_deref() {
                Some("md" | "markdown") => Format::Markdown,
                Some("html" | "htm") => Format::Html,
                _ => Format::Text,
            }
        },
    )
}

fn utf8(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|_| {
        Error::Unreadable(
            "the file is not UTF-8 text, and not a PDF, DOCX or PPTX file".to_string(),
        )
    })
}

fn pdf(bytes: &[u8]) -> Result<Extracted> {
    // pdf-extract panics on some malformed files rather than failing: a
    // bad upload must be an error, never a crashed worker.
    let read = std::panic::catch_unwind(|| -> std::result::Result<_, String> {
        let mut doc = pdf_extract::Document::load_mem(bytes).map_err(|e| e.to_string())?;
        if doc.is_encrypted() {
            // Many PDFs are encrypted with an empty password (permissions only).
            doc.decrypt("")
                .map_err(|_| "the PDF is encrypted with a password".to_string())?;
        }
        let pages: Vec<String> = doc
            .get_pages()
            .into_keys()
            .map(|number| {
                let mut text = String::new();
                let mut output = pdf_extract::PlainTextOutput::new(&mut text);
                // A page that cannot be read (a broken font) adds no text,
                // as in pdf-extract's own page-by-page reader.
                match pdf_extract::output_doc_page(&doc, &mut output, number) {
                    Ok(()) => text,
                    Err(_) => String::new(),
                }
            })
            .collect();
        Ok((pages, pdf_title(&doc)))
    });
    let (pages, title) = read
        .map_err(|_| Error::Unreadable("the PDF could not be read (damaged?)".into()))?
        .map_err(|e| Error::Unreadable(format!("the PDF could not be read: {e}")))?;
    let mut out = Extracted {
        kind: TextKind::Plain,
        title,
        ..Default::default()
    };
    for page in pages {
        out.pages.push(out.text.len());
        out.text.push_str(tidy_pdf_page(&page).trim_end());
        out.text.push_str("\n\n");
    }
    Ok(out)
}

/// A page's text with the runs of blank lines pdf-extract leaves between
/// lines folded to one paragraph break, and form feeds dropped.
fn tidy_pdf_page(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    let mut blank = 0;
    for line in page.split('\n') {
        let line = line.trim_end().trim_start_matches('\u{c}');
        if line.trim().is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(line);
    }
    out
}

fn pdf_title(doc: &pdf_extract::Document) -> Option<String> {
    let info = doc.trailer.get(b"Info").ok()?;
    let info = doc.dereference(info).ok()?.1.as_dict().ok()?;
    let title = info.get(b"Title").ok()?;
    let title = pdf_extract::decode_text_string(title).ok()?;
    let title = title.trim();
    (!title.is_empty()).then(|| title.to_string())
}

/// The members of an Office file's archive, read as text.
struct Archive(zip::ZipArchive<std::io::Cursor<Vec<u8>>>);

impl Archive {
    fn open(bytes: &[u8]) -> Result<Self> {
        zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec()))
            .map(Self)
            .map_err(|e| Error::Unreadable(format!("a damaged zip archive: {e}")))
    }

    fn read(&mut self, name: &str) -> Result<Option<String>> {
        let mut file = match self.0.by_name(name) {
            Ok(f) => f,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(Error::Unreadable(format!("reading {name}: {e}"))),
        };
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| Error::Unreadable(format!("reading {name}: {e}")))?;
        Ok(Some(text))
    }

    /// The `dc:title` of `docProps/core.xml`.
    fn title(&mut self) -> Option<String> {
        let core = self.read("docProps/core.xml").ok()??;
        let mut reader = quick_xml::Reader::from_str(&core);
        let mut inside = false;
        let mut title = String::new();
        loop {
            match reader.read_event().ok()? {
                quick_xml::events::Event::Start(e) if e.local_name().as_ref() == b"title" => {
                    inside = true
                }
                quick_xml::events::Event::End(e) if e.local_name().as_ref() == b"title" => break,
                quick_xml::events::Event::Text(t) if inside => {
                    title.push_str(&t.decode().ok()?);
                }
                quick_xml::events::Event::GeneralRef(r) if inside => {
                    title.push_str(&entity(&r.decode().ok()?));
                }
                quick_xml::events::Event::Eof => break,
                _ => {}
            }
        }
        let title = title.trim();
        (!title.is_empty()).then(|| title.to_string())
    }
}

/// The text of an XML entity reference (`&amp;` arrives as `amp`).
fn entity(name: &str) -> String {
    match name {
        "amp" => "&".into(),
        "lt" => "<".into(),
        "gt" => ">".into(),
        "quot" => "\"".into(),
        "apos" => "'".into(),
        _ => name
            .strip_prefix("#x")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
            .and_then(char::from_u32)
            .map(String::from)
            .unwrap_or_default(),
    }
}

/// Paragraphs of WordprocessingML (DOCX) or DrawingML (PPTX), both of
/// which write a paragraph as `p` and its text runs as `t`: each
/// paragraph's text (runs, tabs, breaks) and whether its style is a heading.
fn paragraphs(xml: &str) -> Result<Vec<(String, bool)>> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let mut current = String::new();
    let mut heading = false;
    let mut in_text = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| Error::Unreadable(format!("damaged XML in the file: {e}")))?;
        // An empty `<w:t/>` opens no text.
        let (element, opens) = match &event {
            Event::Start(e) => (Some(e), true),
            Event::Empty(e) => (Some(e), false),
            _ => (None, false),
        };
        if let Some(e) = element {
            match e.local_name().as_ref() {
                b"t" => in_text = opens,
                b"tab" => current.push('\t'),
                b"br" | b"cr" => current.push('\n'),
                b"pStyle" => {
                    heading = e.attributes().flatten().any(|a| {
                        a.key.local_name().as_ref() == b"val" && {
                            let v = String::from_utf8_lossy(&a.value).to_ascii_lowercase();
                            v.starts_with("heading") || v == "title"
                        }
                    })
                }
                _ => {}
            }
            continue;
        }
        match event {
            Event::End(e) => match e.local_name().as_ref() {
                b"t" => in_text = false,
                b"p" => {
                    out.push((std::mem::take(&mut current), heading));
                    heading = false;
                }
                _ => {}
            },
            Event::Text(t) if in_text => {
                current.push_str(&t.decode().unwrap_or_default());
            }
            Event::GeneralRef(r) if in_text => {
                current.push_str(&entity(&r.decode().unwrap_or_default()));
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// Append paragraphs to `out`, separated by blank lines, noting headings.
fn append_paragraphs(out: &mut Extracted, paragraphs: Vec<(String, bool)>) {
    for (text, heading) in paragraphs {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if heading {
            out.headings.push((out.text.len(), text.to_string()));
        }
        out.text.push_str(text);
        out.text.push_str("\n\n");
    }
}

fn docx(bytes: &[u8]) -> Result<Extracted> {
    let mut archive = Archive::open(bytes)?;
    let body = archive
        .read("word/document.xml")?
        .ok_or_else(|| Error::Unreadable("a DOCX file without word/document.xml".into()))?;
    let mut out = Extracted {
        kind: TextKind::Plain,
        ..Default::default()
    };
    append_paragraphs(&mut out, paragraphs(&body)?);
    out.title = archive
        .title()
        .or_else(|| out.headings.first().map(|(_, h)| h.clone()));
    Ok(out)
}

fn pptx(bytes: &[u8]) -> Result<Extracted> {
    let mut archive = Archive::open(bytes)?;
    // Slides in their numbers' order (slide10 after slide9).
    let mut slides: Vec<(u32, String)> = archive
        .0
        .file_names()
        .filter_map(|n| {
            let n = n.ok()?;
            let number = n
                .strip_prefix("ppt/slides/slide")?
                .strip_suffix(".xml")?
                .parse()
                .ok()?;
            Some((number, n.to_string()))
        })
        .collect();
    slides.sort();
    let mut out = Extracted {
        kind: TextKind::Plain,
        ..Default::default()
    };
    for (_, name) in slides {
        let Some(xml) = archive.read(&name)? else {
            continue;
        };
        out.pages.push(out.text.len());
        let mut paragraphs = paragraphs(&xml)?;
        // A slide's first paragraph is its title.
        if let Some(first) = paragraphs.iter_mut().find(|(t, _)| !t.trim().is_empty()) {
            first.1 = true;
        }
        append_paragraphs(&mut out, paragraphs);
    }
    out.title = archive
        .title()
        .or_else(|| out.headings.first().map(|(_, h)| h.clone()));
    Ok(out)
}

fn html(source: &str) -> Result<Extracted> {
    let text = html_to_text(source)?;
    let mut out = Extracted {
        text,
        kind: TextKind::Plain,
        ..Default::default()
    };
    // Each heading's text, found again in the rendered text in order.
    let mut from = 0;
    for heading in html_headings(source) {
        if let Some(at) = out.text[from..].find(&heading) {
            out.headings.push((from + at, heading.clone()));
            from += at + heading.len();
        }
    }
    out.title = html_title(source).or_else(|| out.headings.first().map(|(_, h)| h.clone()));
    Ok(out)
}

/// The file extensions a folder is read for (`hearth ingest`, `hearth
/// documents sync`); a file named on the command line is read whatever
/// its name.
pub const EXTENSIONS: &[&str] = &[
    "txt", "md", "markdown", "html", "htm", "pdf", "docx", "pptx",
];

/// Read a file: its text as [`extract`] finds it, and the SHA-256 of its
/// bytes (hex), which tells a changed file from an unchanged one.
pub fn read_file(path: &Path) -> Result<(Extracted, String)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_bytes(&bytes, path.file_name().and_then(|n| n.to_str()))
}

/// A file's bytes as [`read_file`] reads them: its text, and its SHA-256.
pub fn read_bytes(bytes: &[u8], name: Option<&str>) -> Result<(Extracted, String)> {
    Ok((extract(bytes, name, None)?, sha256_hex(bytes)))
}

/// The SHA-256 of `bytes` in lower-case hex: a file's `hash`, and the form
/// in which `[[keys]]` keep a key.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reduce HTML to plain text (no link or emphasis markup, which would
/// only add noise to embeddings), only its `<main>` element when it has
/// one, which drops the navigation that documentation sites repeat on
/// every page.
pub fn html_to_text(html: &str) -> Result<String> {
    let body = main_element(html).unwrap_or(html);
    html2text::config::with_decorator(html2text::render::TrivialDecorator::new())
        .string_from_read(body.as_bytes(), 100_000)
        .map_err(|e| Error::Unreadable(format!("unreadable HTML: {e}")))
}

fn main_element(html: &str) -> Option<&str> {
    let start = html.find("<main")?;
    let end = html[start..].rfind("</main>")? + start + "</main>".len();
    Some(&html[start..end])
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// The readable files under `paths` (files as given, directories walked
/// for [`EXTENSIONS`]), sorted, so that runs are repeatable.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
        if meta.is_dir() {
            walk(p, &mut files)?;
        } else {
            files.push(p.clone());
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if EXTENSIONS.contains(&extension(&path).as_str()) {
            out.push(path);
        }
    }
    Ok(())
}

/// The text of the `<h1>` to `<h3>` elements, tags stripped.
fn html_headings(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lower = source.to_ascii_lowercase();
    let mut at = 0;
    while let Some(found) = lower[at..].find("<h") {
        let start = at + found;
        at = start + 2;
        let level = lower.as_bytes().get(start + 2).copied();
        let after = lower.as_bytes().get(start + 3).copied();
        if !matches!(level, Some(b'1'..=b'3')) || !matches!(after, Some(b'>' | b' ')) {
            continue;
        }
        let Some(open_end) = lower[start..].find('>') else {
            break;
        };
        let close = format!("</h{}>", level.unwrap_or(b'1') as char);
        let Some(end) = lower[start..].find(&close) else {
            break;
        };
        let inner = &source[start + open_end + 1..start + end];
        let text = strip_tags(inner);
        if !text.is_empty() {
            out.push(text);
        }
        at = start + end;
    }
    out
}

fn html_title(source: &str) -> Option<String> {
    let lower = source.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let end = lower[start..].find("</title>")? + start;
    let title = strip_tags(&source[start..end]);
    (!title.is_empty()).then_some(title)
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Markdown's ATX headings (`# Title`), outside fenced code.
fn markdown_headings(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut fenced = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
        } else if !fenced && trimmed.starts_with('#') {
            let hashes = trimmed.chars().take_while(|&c| c == '#').count();
            let rest = &trimmed[hashes..];
            if hashes <= 6 && (rest.starts_with(' ') || rest.trim().is_empty()) {
                let heading = rest.trim().trim_end_matches('#').trim();
                if !heading.is_empty() {
                    out.push((offset, heading.to_string()));
                }
            }
        }
        offset += line.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A zip archive holding `members`, as Office writes them.
    fn office(members: &[(&str, &str)]) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut buf);
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            for (name, text) in members {
                zip.start_file(*name, options).unwrap();
                zip.write_all(text.as_bytes()).unwrap();
            }
            zip.finish().unwrap();
        }
        buf.into_inner()
    }

    #[test]
    fn docx_paragraphs_headings_and_title() {
        let body = r#"<w:document xmlns:w="w"><w:body>
            <w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Ownership</w:t></w:r></w:p>
            <w:p><w:r><w:t xml:space="preserve">Each value has </w:t></w:r><w:r><w:t>an owner &amp; a scope.</w:t></w:r></w:p>
            <w:p><w:r><w:t/></w:r></w:p>
            <w:p><w:r><w:t>Second</w:t><w:tab/><w:t>para</w:t></w:r></w:p>
        </w:body></w:document>"#;
        let core = r#"<cp:coreProperties xmlns:cp="c" xmlns:dc="d"><dc:title>The Book</dc:title></cp:coreProperties>"#;
        let file = office(&[("word/document.xml", body), ("docProps/core.xml", core)]);
        assert_eq!(sniff(&file, None).unwrap(), Format::Docx);
        let out = extract(&file, Some("x.bin"), None).unwrap();
        assert_eq!(
            out.text,
            "Ownership\n\nEach value has an owner & a scope.\n\nSecond\tpara\n\n"
        );
        assert_eq!(out.headings, vec![(0, "Ownership".to_string())]);
        assert_eq!(out.title.as_deref(), Some("The Book"));
        assert_eq!(out.place(20), (None, Some("Ownership".to_string())));
    }

    #[test]
    fn pptx_slides_are_pages_in_number_order() {
        let slide = |t: &str| {
            format!(
                r#"<p:sld xmlns:a="a" xmlns:p="p"><a:p><a:r><a:t>{t} title</a:t></a:r></a:p><a:p><a:r><a:t>{t} body</a:t></a:r></a:p></p:sld>"#
            )
        };
        let (s1, s2, s10) = (slide("one"), slide("two"), slide("ten"));
        let file = office(&[
            ("ppt/presentation.xml", "<p:presentation xmlns:p=\"p\"/>"),
            ("ppt/slides/slide10.xml", &s10),
            ("ppt/slides/slide2.xml", &s2),
            ("ppt/slides/slide1.xml", &s1),
        ]);
        let out = extract(&file, None, None).unwrap();
        assert!(out.text.starts_with("one title\n\none body\n\ntwo title"));
        assert_eq!(out.pages.len(), 3);
        let ten = out.text.find("ten body").unwrap();
        assert_eq!(out.place(ten), (Some(3), Some("ten title".to_string())));
        assert_eq!(out.title.as_deref(), Some("one title"));
    }

    #[test]
    fn formats_come_from_the_content() {
        assert_eq!(sniff(b"%PDF-1.7\n", Some("a.txt")).unwrap(), Format::Pdf);
        assert_eq!(
            sniff(b"  <!DOCTYPE html><p>x", Some("a.txt")).unwrap(),
            Format::Html
        );
        assert_eq!(
            sniff(b"# Title", Some("notes.md")).unwrap(),
            Format::Markdown
        );
        assert_eq!(sniff(b"# Title", None).unwrap(), Format::Text);
        let xlsx = office(&[("xl/workbook.xml", "<workbook/>")]);
        assert!(extract(&xlsx, None, None)
            .unwrap_err()
            .to_string()
            .contains("XLSX"));
        assert!(extract(&[0xff, 0xfe, 0x00], None, None)
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
        assert!(extract(b"%PDF-1.4 garbage", None, None).is_err());
        // A hint that the content contradicts is refused.
        assert!(extract(b"plain words", None, Some(Format::Pdf)).is_err());
        assert_eq!(
            extract(b"# A\ntext", None, Some(Format::Markdown))
                .unwrap()
                .headings,
            vec![(0, "A".to_string())]
        );
    }

    #[test]
    fn markdown_and_html_headings_have_places() {
        let md = "# Top\nintro\n```\n# not a heading\n```\n## Next ##\nbody\n";
        let out = Extracted::from_text(md.to_string(), TextKind::Markdown);
        let names: Vec<&str> = out.headings.iter().map(|(_, h)| h.as_str()).collect();
        assert_eq!(names, ["Top", "Next"]);
        assert_eq!(
            out.place(md.find("body").unwrap()).1.as_deref(),
            Some("Next")
        );
        assert_eq!(out.place(0), (None, Some("Top".to_string())));
        let html = "<html><head><title>Page</title></head><main><h1 id=x>Ownership <a href=#>§</a></h1><p>Values.</p><h2>Moves</h2><p>Moving.</p></main></html>";
        let out = extract(html.as_bytes(), None, None).unwrap();
        assert_eq!(out.title.as_deref(), Some("Page"));
        let names: Vec<&str> = out.headings.iter().map(|(_, h)| h.as_str()).collect();
        assert_eq!(names, ["Ownership §", "Moves"]);
        let moving = out.text.find("Moving").unwrap();
        assert_eq!(out.place(moving).1.as_deref(), Some("Moves"));
    }

    #[test]
    fn html_keeps_main_and_drops_navigation() {
        let html = "<html><nav>Table of contents</nav><main><h1>Ownership</h1><p>Each value has an <b>owner</b>.</p></main></html>";
        let text = html_to_text(html).unwrap();
        assert!(
            text.contains("Ownership") && text.contains("owner"),
            "{text}"
        );
        assert!(!text.contains("Table of contents"), "{text}");
    }

    #[test]
    fn pdf_pages_fold_blank_lines() {
        assert_eq!(tidy_pdf_page("\u{c}a\n\n\n\nb\nc  \n\n"), "a\n\nb\nc");
    }
}
