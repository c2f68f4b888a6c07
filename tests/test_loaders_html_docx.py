"""HTML and DOCX loaders: titles, heading sections (named as Markdown's are), boilerplate dropped,
tables as "cell | cell" rows, charsets, one clear LoadError per kind of bad file, and a search
over ingested HTML and DOCX files that finds a phrase under its heading."""

from __future__ import annotations

import codecs
import io
import zipfile

import docx
import pytest
from docx.enum.style import WD_STYLE_TYPE
from docx.oxml import parse_xml
from docx.oxml.ns import nsdecls

from helpers_ingest import edge_settings, src, write
from pipelines.ingest import ingest
from pipelines.stores import open_store
from rag.errors import LoadError
from rag.ingest.chunking import Chunker
from rag.ingest.html import page_title
from rag.ingest.loaders import load, markdown_sections
from rag.search.retrieval import Retriever

PAGE = """<!doctype html><html><head><meta charset="utf-8">
<title>Espresso guide | Coffee Site</title><meta property="og:site_name" content="Coffee Site">
<style>p { color: red }</style><script>var hidden = "<p>scripted words</p>";</script></head>
<body><header><a href="/">Homepage link</a><nav>Menu entry</nav></header>
<main><article><header><h1>Espresso guide</h1><p>By Ann Barista</p></header>
<p>An espresso is brewed under pressure.<br>Nine bars are typical.</p>
<h2>Grinding</h2><p>Grind the beans fine<span>ly</span> &amp; evenly.</p>
<ul><li>Burr grinders<li>Blade grinders <b>are uneven</b></ul>
<table><tr><th>Size<th>Grams</tr><tr><td>Single</td><td colspan="2">7</td></tr>
<tr><td><p>Double<td>14</table>
<h3>Burrs</h3><div hidden>secret drawer</div><p aria-hidden="true">decorative words</p>
<p style="display: none">invisible words</p><form><label>Your email</label></form>
<pre>line one
line    two</pre>
<h2>Milk</h2><p>Steam it to sixty degrees.
</article></main><div role="contentinfo">Legal notice</div><footer>Copyright footer</footer>
<aside>Advert words</aside><noscript>Enable scripts</noscript><template>Template words</template>
<svg><title>Icon title</title><text>svg words</text></svg></body></html>"""


def load_error(path) -> str:
    with pytest.raises(LoadError) as info:
        load(path)
    assert info.value.source == str(path)
    return info.value.reason


def html_doc(tmp_path, html: str | bytes, name: str = "page.html"):
    data = html.encode("utf-8") if isinstance(html, str) else html
    return load(write(tmp_path, {name: data})[name])


def text_of(doc) -> str:
    return "\n\n".join(p.text for p in doc.pages)


# ------------------------------------------------------------------ HTML


def test_html_title_sections_and_text(tmp_path):
    doc = html_doc(tmp_path, PAGE)
    assert doc.title == "Espresso guide"
    assert doc.warnings == []
    assert [p.section for p in doc.pages] == [
        "Espresso guide", "Espresso guide > Grinding", "Espresso guide > Grinding > Burrs",
        "Espresso guide > Milk"]
    assert {p.number for p in doc.pages} == {1}
    assert doc.pages[0].text == ("Espresso guide\n\nBy Ann Barista\n\n"
                                 "An espresso is brewed under pressure.\nNine bars are typical.")
    assert doc.pages[1].text.startswith("Grinding\n\nGrind the beans finely & evenly.")
    assert doc.pages[2].text == "Burrs\n\nline one\nline two"
    assert doc.pages[3].text == "Milk\n\nSteam it to sixty degrees."


def test_html_boilerplate_and_hidden_elements_are_dropped(tmp_path):
    text = text_of(html_doc(tmp_path, PAGE))
    for dropped in ("scripted", "color", "Homepage", "Menu entry", "secret", "decorative", "invisible",
                    "email", "Legal notice", "Copyright", "Advert", "Enable scripts", "Template",
                    "Icon", "svg words"):
        assert dropped not in text, dropped
    assert "By Ann Barista" in text  # an article's own header is content


def test_html_tables_become_rows_and_list_items_paragraphs(tmp_path):
    grinding = html_doc(tmp_path, PAGE).pages[1].text
    # implied end tags (<li>, <th>, <td> left open, a <p> in a cell) still give one row per <tr>
    assert grinding.split("\n\n")[2:] == ["Burr grinders", "Blade grinders are uneven",
                                          "Size | Grams", "Single | 7", "Double | 14"]


def test_html_text_outside_main_is_dropped_only_when_there_is_a_main(tmp_path):
    body = "<div>Cookie banner words</div>{}<p>Closing words</p>"
    with_main = html_doc(tmp_path, body.format("<main><p>Main words here</p></main>"), "a.html")
    assert text_of(with_main) == "Main words here"
    without = html_doc(tmp_path, body.format("<p>Main words here</p>"), "b.html")
    assert text_of(without) == "Cookie banner words\n\nMain words here\n\nClosing words"


def test_html_sections_match_markdown_sections(tmp_path):
    html = "<p>Intro</p><h1>A</h1><p>x</p><h3>B</h3><p>y</p><h2>C</h2><p>z</p><h1>D</h1><h4>E</h4><p>w</p>"
    md = "Intro\n\n# A\n\nx\n\n### B\n\ny\n\n## C\n\nz\n\n# D\n\n#### E\n\nw\n"
    doc = html_doc(tmp_path, html)
    assert [p.section for p in doc.pages] == [sec for sec, _ in markdown_sections(md)]
    assert [(p.section, p.text) for p in doc.pages] == [
        (None, "Intro"), ("A", "A\n\nx"), ("A > B", "B\n\ny"), ("A > C", "C\n\nz"), ("D", "D"),
        ("D > E", "E\n\nw")]


@pytest.mark.parametrize(("title", "h1", "site", "expected"), [
    ("Espresso guide | Coffee Site", None, "Coffee Site", "Espresso guide"),
    ("Espresso guide - Coffee Site", "Espresso guide", None, "Espresso guide"),
    ("Install | Docs | Acme", None, "acme", "Install | Docs"),
    ("2023 - A year in review", None, None, "2023 - A year in review"),  # not known to be a site
    ("Espresso guide | Coffee Site", "Milk", "Tea Site", "Espresso guide | Coffee Site"),
    ("Spider-Man - Wikipedia", "Spider-Man", None, "Spider-Man"),
    (None, "First  heading", None, "First heading"),
    ("  ", None, None, None),
])
def test_page_title_strips_a_site_suffix_only_when_safe(title, h1, site, expected):
    assert page_title(title, h1, site) == expected


def test_html_title_falls_back_to_the_first_h1_then_none(tmp_path):
    assert html_doc(tmp_path, "<h2>Sub</h2><h1>Main heading</h1><p>text</p>", "a.html").title == "Main heading"
    assert html_doc(tmp_path, "<p>Only a paragraph</p>", "b.html").title is None


@pytest.mark.parametrize(("data", "warned"), [
    ('<meta charset="windows-1252"><p>caf\xe9 cr\xe8me \u20ac</p>'.encode("cp1252"), False),
    ('<meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-1"><p>caf\xe9 cr\xe8me \u20ac</p>'
     .encode("cp1252"), False),  # iso-8859-1 means windows-1252, as in browsers
    (codecs.BOM_UTF8 + '<meta charset="iso-8859-1"><p>caf\xe9 cr\xe8me \u20ac</p>'.encode("utf-8"), False),
    ("<p>caf\xe9 cr\xe8me \u20ac</p>".encode("cp1252"), True),  # no declaration: decode_text's fallback
    ('<meta charset="no-such-charset"><p>caf\xe9 cr\xe8me \u20ac</p>'.encode("utf-8"), True),
])
def test_html_charset(tmp_path, data, warned):
    doc = html_doc(tmp_path, data)
    assert text_of(doc) == "caf\xe9 cr\xe8me \u20ac"
    assert bool(doc.warnings) == warned, doc.warnings


def test_html_bad_input(tmp_path):
    files = write(tmp_path, {"empty.html": b"", "blank.htm": b" \n\t ", "blob.html": bytes(range(256)) * 8,
                             "chrome.html": b"<html><head><title>Site</title><script>x()</script></head>"
                                            b"<body><nav>Home About</nav><footer>(c) us</footer></body></html>"})
    assert "empty file" in load_error(files["empty.html"])
    assert "empty file" in load_error(files["blank.htm"])
    assert "binary file" in load_error(files["blob.html"])
    assert load_error(files["chrome.html"]).startswith("no text")


# ------------------------------------------------------------------ DOCX


def docx_bytes(build, title: str = "") -> bytes:
    d = docx.Document()
    d.core_properties.title = title
    build(d)
    out = io.BytesIO()
    d.save(out)
    return out.getvalue()


def handbook(d) -> None:
    d.add_paragraph("Coffee handbook", style="Title")
    d.add_paragraph("Before any heading.")
    d.add_heading("Espresso", level=1)
    d.add_paragraph("An espresso is brewed under pressure.")
    t = d.add_table(rows=3, cols=3)
    for (r, c), text in {(0, 0): "Size", (0, 1): "Grams", (0, 2): "Notes", (1, 1): "7", (2, 1): "14"}.items():
        t.cell(r, c).text = text
    t.cell(1, 0).merge(t.cell(2, 0)).text = "Single or double"  # vertical merge
    t.cell(1, 2).merge(t.cell(2, 2)).text = "Tamp firmly"
    d.add_paragraph("After the table.")
    d.add_heading("Grinding", level=2)
    p = d.add_paragraph("Grind fine")
    p.add_run().add_break()
    p.add_run("then\ttamp")
    d.add_heading("Milk", level=1)
    d.add_paragraph("Steam it to sixty degrees.")


def docx_doc(tmp_path, data: bytes, name: str = "doc.docx"):
    return load(write(tmp_path, {name: data})[name])


def test_docx_sections_tables_in_place_and_title(tmp_path):
    doc = docx_doc(tmp_path, docx_bytes(handbook))
    assert doc.title == "Coffee handbook"
    assert [p.section for p in doc.pages] == [
        "Coffee handbook", "Coffee handbook > Espresso", "Coffee handbook > Espresso > Grinding",
        "Coffee handbook > Milk"]
    assert doc.pages[0].text == "Coffee handbook\n\nBefore any heading."
    # the table sits between the paragraphs around it; merged cells appear once
    assert doc.pages[1].text.split("\n\n") == [
        "Espresso", "An espresso is brewed under pressure.", "Size | Grams | Notes",
        "Single or double | 7 | Tamp firmly", "14", "After the table."]
    assert doc.pages[2].text == "Grinding\n\nGrind fine\nthen tamp"
    assert doc.warnings == []


@pytest.mark.parametrize(("core", "expected"), [
    ("Quarterly report", "Quarterly report"),
    ("Document1", "Espresso"),
    ("Microsoft Word - notes.doc", "Espresso"),
    ("", "Espresso"),
])
def test_docx_title_from_properties_when_meaningful(tmp_path, core, expected):
    def build(d):
        d.add_paragraph("Body first.")
        d.add_heading("Espresso", level=1)
        d.add_paragraph("Text.")
    assert docx_doc(tmp_path, docx_bytes(build, title=core)).title == expected


def test_docx_without_headings_has_no_title_or_section(tmp_path):
    doc = docx_doc(tmp_path, docx_bytes(lambda d: d.add_paragraph("Just a paragraph.")))
    assert doc.title is None
    assert [(p.section, p.text) for p in doc.pages] == [(None, "Just a paragraph.")]


def test_docx_headings_by_outline_level_and_based_on_style(tmp_path):
    def build(d):
        custom = d.styles.add_style("Chapter Head", WD_STYLE_TYPE.PARAGRAPH)
        custom.base_style = d.styles["Heading 1"]
        d.add_paragraph("Chapter one", style="Chapter Head")
        p = d.add_paragraph("Outlined part")
        p._p.get_or_add_pPr().append(parse_xml(f'<w:outlineLvl {nsdecls("w")} w:val="1"/>'))
        d.add_paragraph("Body text.")
        toc = d.styles.add_style("TOC 1", WD_STYLE_TYPE.PARAGRAPH)
        d.add_paragraph("Chapter one\t3", style=toc)
    doc = docx_doc(tmp_path, docx_bytes(build))
    assert [(p.section, p.text) for p in doc.pages] == [
        ("Chapter one", "Chapter one"), ("Chapter one > Outlined part", "Outlined part\n\nBody text.")]


def test_docx_tracked_changes_and_content_controls(tmp_path):
    w = nsdecls("w")

    def build(d):
        body = d.element.body
        body.insert(0, parse_xml(
            f'<w:p {w}><w:r><w:t xml:space="preserve">Kept </w:t></w:r>'
            f'<w:ins w:id="1" w:author="a"><w:r><w:t>inserted</w:t></w:r></w:ins>'
            f'<w:del w:id="2" w:author="a"><w:r><w:delText>deleted</w:delText></w:r></w:del></w:p>'))
        body.insert(1, parse_xml(f'<w:sdt {w}><w:sdtContent><w:p><w:r><w:t>In a content control</w:t>'
                                 f'</w:r></w:p></w:sdtContent></w:sdt>'))
    assert text_of(docx_doc(tmp_path, docx_bytes(build))) == "Kept inserted\n\nIn a content control"


def zip_of(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return out.getvalue()


def test_docx_bad_input(tmp_path):
    good = docx_bytes(handbook)
    with zipfile.ZipFile(io.BytesIO(good)) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    files = write(tmp_path, {
        "empty.docx": b"",
        "text.docx": b"plain text, not a zip",
        "cut.docx": good[: len(good) // 2],
        "legacy.docx": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(1024),
        "other.docx": zip_of({"readme.txt": b"hello"}),
        "broken.docx": zip_of({**parts, "word/document.xml": b"<w:document garbage"}),
        "blank.docx": docx_bytes(lambda d: d.add_paragraph("   ")),
    })
    assert "empty file" in load_error(files["empty.docx"])
    assert load_error(files["text.docx"]).startswith("corrupt or not a .docx: not a zip archive")
    assert load_error(files["cut.docx"]).startswith("corrupt or not a .docx")
    assert load_error(files["legacy.docx"]) == ("encrypted .docx or legacy Word .doc: save as .docx "
                                                "without a password")
    assert "without word/document.xml" in load_error(files["other.docx"])
    assert load_error(files["broken.docx"]).startswith("corrupt or not a .docx: XMLSyntaxError")
    assert load_error(files["blank.docx"]).startswith("no text")


# ------------------------------------------------------------------ end to end


def test_ingest_and_search_find_a_phrase_under_its_heading(tmp_path, encoder):
    def notes(d):
        d.add_heading("Garden notes", level=1)
        d.add_paragraph("The orchard is planted in rows of apple and pear trees.")
        d.add_heading("Watering", level=2)
        d.add_paragraph("Tomato seedlings need watering every morning during a heatwave.")
        d.add_heading("Pruning", level=2)
        d.add_paragraph("Roses are pruned back hard in late winter before new growth starts.")

    files = write(tmp_path / "docs", {"coffee.html": PAGE, "garden.docx": docx_bytes(notes),
                                      "broken.docx": b"not a zip"})
    settings = edge_settings(tmp_path / "store")
    report = ingest([tmp_path / "docs"], encoder=encoder, store=settings, chunker=Chunker(64, 8),
                    progress=False)
    status = {o.source: o.status for o in report.outcomes}
    assert status == {src(files["coffee.html"]): "ingested", src(files["garden.docx"]): "ingested",
                      src(files["broken.docx"]): "failed"}
    store = open_store(settings)
    try:
        retriever = Retriever(store, encoder, top_k=3)
        for query, path, section in [
            ("how often do tomato seedlings need watering", files["garden.docx"], "Garden notes > Watering"),
            ("how fine should the beans be ground", files["coffee.html"], "Espresso guide > Grinding"),
        ]:
            top = retriever.search(query, mode="hybrid").results[0]
            assert (top.source, top.section) == (src(path), section), (query, top)
    finally:
        store.close()
