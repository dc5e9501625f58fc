//! Documents as teams have them, end to end: the Rust book printed to PDF
//! by headless Chromium and a Word file written by python-docx, uploaded
//! as `multipart/form-data` into collections, searched and cited by page
//! and heading; a PDF without a text layer and an upload past the limit
//! refused; collections kept apart and deleted whole.

use crate::common::{get, post, repo, TestServer};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Print `html` to a PDF with headless Chromium.
fn print_to_pdf(html: &Path, pdf: &Path) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/browser-env.sh (scripts/test.sh does it for you)"
    );
    let out = std::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-pdf-header-footer",
        ])
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("running chromium");
    assert!(
        pdf.exists(),
        "chromium wrote no PDF: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn book_page(name: &str) -> String {
    let sysroot = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc");
    let dir = PathBuf::from(String::from_utf8(sysroot.stdout).unwrap().trim())
        .join("share/doc/rust/html/book");
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the toolchain's rust-docs component holds the book)",
            dir.join(name).display()
        )
    })
}

/// The book's chapter on threads, one section per printed page: page 1 is
/// the introduction, page 2 "Creating a New Thread with spawn", page 3
/// "Waiting for All Threads to Finish", page 4 "Using move Closures".
fn threads_chapter_html() -> String {
    let page = book_page("ch16-01-threads.html");
    let start = page.find("<main>").expect("<main>");
    let end = page.find("</main>").expect("</main>");
    let main = &page[start + "<main>".len()..end];
    let sections: Vec<&str> = main.split("<h3").collect();
    assert_eq!(sections.len(), 4, "the chapter has 3 sections");
    let mut body = String::new();
    for (i, section) in sections.iter().enumerate() {
        let opening = if i == 0 { "" } else { "<h3" };
        body.push_str(&format!(
            "<section style=\"break-before: page\">{opening}{section}</section>"
        ));
    }
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Threads</title>\
         <style>body {{ font: 6.5pt sans-serif }} pre {{ font-size: 5.5pt }}</style></head>\
         <body>{body}</body></html>"
    )
}

/// A Word file written by python-docx (the test virtualenv's).
fn write_docx(path: &Path) {
    let python = repo().join("target/py-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/python-env.sh (scripts/test.sh does it for you)",
        python.display()
    );
    let script = r#"
import sys, docx
d = docx.Document()
d.core_properties.title = "Pager runbook"
d.add_heading("Pager runbook", 0)
d.add_paragraph("This runbook is for the operations team on call.")
for i in range(40):
    d.add_paragraph(f"Step {i}: read the dashboard of edge host {i} and note its error rate in the log book.")
d.add_heading("Flushing the zorblax cache", 1)
d.add_paragraph("When the zorblax cache serves stale pages, run zcache purge --all on every edge host, then wait two minutes.")
d.add_heading("Rotating the pager", 1)
d.add_paragraph("The pager rotates every Monday at nine; hand over open incidents in the channel.")
d.save(sys.argv[1])
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python-docx: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn upload(
    client: &Client,
    server: &TestServer,
    files: Vec<(&str, Vec<u8>)>,
    fields: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut form = reqwest::multipart::Form::new();
    for (name, bytes) in files {
        form = form.part(
            "file",
            reqwest::multipart::Part::bytes(bytes).file_name(name.to_string()),
        );
    }
    for (k, v) in fields {
        form = form.text(k.to_string(), v.to_string());
    }
    let response = client
        .post(server.at("/documents"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn search(client: &Client, server: &TestServer, body: Value) -> Vec<Value> {
    let (status, found) = post(client, server.at("/search"), body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body} -> {found}");
    found["results"].as_array().unwrap().clone()
}

#[tokio::test]
async fn pdf_and_docx_uploads_are_cited_by_page_and_heading_within_their_collections() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("threads.html");
    std::fs::write(&html, threads_chapter_html()).unwrap();
    let pdf = dir.path().join("threads.pdf");
    print_to_pdf(&html, &pdf);
    let blank_html = dir.path().join("blank.html");
    std::fs::write(&blank_html, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let blank = dir.path().join("blank.pdf");
    print_to_pdf(&blank_html, &blank);
    let docx = dir.path().join("runbook.docx");
    write_docx(&docx);

    let client = Client::new();
    let server =
        TestServer::start(&dir.path().join("data"), &["--max-upload-bytes", "9000000"]).await;
    for name in ["book", "ops"] {
        let (status, body) = post(&client, server.at("/collections"), json!({"name": name})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = post(&client, server.at("/collections"), json!({"name": "ops"})).await;
    assert_eq!((status, &body["created"]), (StatusCode::OK, &json!(false)));
    let (status, body) = post(
        &client,
        server.at("/collections"),
        json!({"name": "Not OK"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The PDF, its format read from the content (the name says nothing).
    let (status, body) = upload(
        &client,
        &server,
        vec![("threads", std::fs::read(&pdf).unwrap())],
        &[("collection", "book"), ("id", "threads.pdf")],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = upload(
        &client,
        &server,
        vec![("runbook.docx", std::fs::read(&docx).unwrap())],
        &[("collection", "ops"), ("metadata", r#"{"team": "ops"}"#)],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The same id in another collection is another document.
    let (status, body) = upload(
        &client,
        &server,
        vec![(
            "notes.md",
            b"# Notes\nThe book collection is for reading.".to_vec(),
        )],
        &[("collection", "ops"), ("id", "threads.pdf")],
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // The answer is on page 3 of the printed chapter.
    let found = search(
        &client,
        &server,
        json!({"query": "How do I wait for all spawned threads to finish using join handles?",
               "collection": "book", "top_k": 3}),
    )
    .await;
    let top = &found[0];
    assert_eq!(top["document_id"], "threads.pdf", "{top}");
    assert_eq!(top["page"], 3, "{found:#?}");
    assert_eq!(top["title"], "Threads");
    assert!(top["end"].as_u64() > top["start"].as_u64());
    assert!(
        found.iter().all(|p| p["document_id"] == "threads.pdf"),
        "only the book's documents: {found:#?}"
    );
    // The Word file: its heading and title come with the passage.
    let found = search(
        &client,
        &server,
        json!({"query": "how to flush the zorblax cache", "collection": "ops", "top_k": 1}),
    )
    .await;
    assert_eq!(found[0]["document_id"], "runbook.docx");
    assert_eq!(found[0]["heading"], "Flushing the zorblax cache");
    assert_eq!(found[0]["title"], "Pager runbook");
    assert_eq!(found[0]["metadata"]["team"], "ops");
    // RAG cites the page.
    let (status, answer) = post(
        &client,
        server.at("/rag"),
        json!({"question": "How do I wait for spawned threads to finish with join handles?",
               "collection": "book", "max_tokens": 8, "top_k": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["sources"][0]["page"], 3, "{answer}");

    // A document read back says where it came from.
    let (status, doc) = get(&client, server.at("/documents/threads.pdf?collection=book")).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["collection"], "book");
    assert_eq!(doc["hash"].as_str().unwrap().len(), 64);
    let pages: Vec<u64> = doc["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["page"].as_u64().unwrap())
        .collect();
    assert!(
        pages.windows(2).all(|w| w[0] <= w[1]) && pages[0] == 1 && pages.last() >= Some(&4),
        "{pages:?}"
    );
    let (status, list) = get(&client, server.at("/documents?collection=ops")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 2, "{list}");

    // Refusals: a PDF without text, a spreadsheet, an upload past the limit,
    // an unknown collection.
    let (status, body) = upload(
        &client,
        &server,
        vec![("scan.pdf", std::fs::read(&blank).unwrap())],
        &[("collection", "book")],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("no extractable text") && message.contains("OCR is not supported"),
        "{message}"
    );
    let (status, body) = upload(
        &client,
        &server,
        vec![("big.txt", vec![b'a'; 9_500_000])],
        &[("collection", "book")],
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_upload_bytes"));
    let (status, body) = upload(
        &client,
        &server,
        vec![("a.txt", b"text".to_vec())],
        &[("collection", "nope")],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = post(
        &client,
        server.at("/search"),
        json!({"query": "threads", "collection": "nope"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Deleting a collection takes its documents, chunks and index entries.
    let (status, body) = get(&client, server.at("/collections")).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = body["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["book", "default", "ops"]);
    let response = client
        .delete(server.at("/collections/ops"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["documents"], 2, "{body}");
    let (status, _) = get(&client, server.at("/documents?collection=ops")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, info) = get(&client, server.at("/info")).await;
    let store = &info["index"];
    assert_eq!(
        store["chunks"], store["index_points"],
        "the deleted collection's index went with it: {store}"
    );
    let response = client
        .delete(server.at("/collections/default"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    server.stop();
}
