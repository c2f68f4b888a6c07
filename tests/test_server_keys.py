"""Keys per client (`rag serve --keys FILE`): the key file's rules, and isolation as clients see
it on a real uvicorn server on loopback over three real embedded collections. Team A may read
`alpha` and `shared` and write `alpha`; team B reads and writes `beta` (its key given by hash);
a reader may only read `shared`; the server's own `--server-key-env` key sees everything.
Every loop is bounded in count and time."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from helpers_ingest import wait_job
from pipelines.config import RagConfig
from pipelines.server.app import create_app, serve_in_background
from pipelines.server.keys import Grant, find_grant, key_digest, load_keys
from pipelines.server.options import ServeOptions
from pipelines.stores import StoreSettings, open_store
from rag.errors import ConfigError

ADMIN, ADMIN_ENV = "admin-key-0123456789", "RAG_TEST_KEYS_ADMIN"
KEY_A, KEY_A_ENV = "team-a-key-0123456789", "RAG_TEST_KEYS_TEAM_A"
KEY_B = "team-b-key-9876543210"
READER, READER_ENV = "reader-key-0123456789", "RAG_TEST_KEYS_READER"
TEXTS = {"alpha": ("alpha.txt", "The lighthouse keeper logged the tide tables every morning at dawn."),
         "beta": ("beta.txt", "A sourdough starter is fed with equal weights of flour and water."),
         "shared": ("shared.txt", "Tomatoes need full sun and regular watering in the garden.")}
KEYS_TOML = f"""
[[key]]
name = "team-a"
env = "{KEY_A_ENV}"
read = ["shared"]
write = ["alpha"]

[[key]]
name = "team-b"
sha256 = "{hashlib.sha256(KEY_B.encode()).hexdigest()}"
read = ["beta"]
write = ["beta"]
max_requests = 3

[[key]]
name = "reader"
env = "{READER_ENV}"
read = ["shared"]
"""


def write_keys(tmp_path: Path, text: str) -> str:
    path = tmp_path / "keys.toml"
    path.write_text(text)
    return str(path)


# ---------------------------------------------------------------------------- the key file


def test_the_key_file_gives_each_key_its_collections(tmp_path):
    keys = load_keys(write_keys(tmp_path, KEYS_TOML), {KEY_A_ENV: KEY_A, READER_ENV: READER})
    a = find_grant(KEY_A.encode(), keys)
    b = find_grant(KEY_B.encode(), keys)
    reader = find_grant(READER.encode(), keys)
    assert (a.name, b.name, reader.name) == ("team-a", "team-b", "reader")
    assert find_grant(b"team-a-key-012345678", keys) is None and find_grant(None, keys) is None
    assert a.visible(["alpha", "beta", "shared"]) == ["alpha", "shared"]  # what it writes it reads
    assert a.may_write("alpha") and not a.may_write("shared") and not a.may_read("beta")
    assert b.visible(["alpha", "beta", "shared"]) == ["beta"] and b.max_requests == 3
    assert not reader.may_write_any() and reader.may_write_any() is False
    # A request naming no collection: the server's default when the key reads it, else its first.
    assert a.default_collection("shared") == "shared" and b.default_collection("shared") == "beta"
    everything = Grant.everything()
    assert everything.may_write("anything") and everything.default_collection("docs") == "docs"
    star = load_keys(write_keys(tmp_path, '[[key]]\nname = "ops"\nenv = "K"\nread = ["*"]\n'), {"K": "k"})
    assert star[0][1].may_read("whatever") and not star[0][1].may_write("whatever")
    assert star[0][0] == key_digest("k")


@pytest.mark.parametrize("text, env, says", [
    ('[[key]]\nname = "a"\nsha256 = "ab"\nread = ["x"]\n', {}, "64 hex digits"),
    ('[[key]]\nname = "a"\nenv = "NOPE"\n', {}, "NOPE is not set"),
    ('[[key]]\nname = "a"\nenv = "K"\nsha256 = "' + "0" * 64 + '"\n', {"K": "k"}, "one of them"),
    ('[[key]]\nname = "a"\nkey = "plain"\n', {}, "unknown field(s) key"),
    ('[[key]]\nname = "a"\nenv = "K"\n[[key]]\nname = "a"\nenv = "L"\n', {"K": "k", "L": "l"}, "two keys"),
    ('[[key]]\nname = "a"\nenv = "K"\n[[key]]\nname = "b"\nenv = "L"\n', {"K": "k", "L": "k"}, "same key"),
    ('[[key]]\nname = "a"\nenv = "K"\nread = "x"\nmax_chats = 0\n', {"K": "k"}, "max_chats"),
    ('[[key]]\nname = "a"\nenv = "K"\nread = ["x"]\ndefault = "y"\n', {"K": "k"}, "default must"),
    ('[key]\nname = "a"\n', {}, "[[key]] table"),
    ("name = ", {}, "not valid TOML"),
])
def test_a_wrong_key_file_is_a_clear_error_naming_the_file(tmp_path, text, env, says):
    path = write_keys(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_keys(path, env)
    assert path in str(e.value) and says in str(e.value)
    assert "k" not in {w for w in str(e.value).split()}  # a key's value is never in the message


def test_the_command_stops_on_a_wrong_key_file_before_it_opens_anything(tmp_path, capsys, monkeypatch):
    from pipelines.cli.app import main

    path = write_keys(tmp_path, '[[key]]\nname = "a"\nenv = "RAG_TEST_KEYS_UNSET"\n')
    monkeypatch.delenv("RAG_TEST_KEYS_UNSET", raising=False)
    assert main(["serve", "--store", str(tmp_path / "nowhere"), "--keys", path, "--llm", "none"]) == 2
    err = capsys.readouterr().err
    assert "RAG_TEST_KEYS_UNSET is not set" in err and path in err and "Traceback" not in err
    # A key file counts as a key for the bind rule: an open address with one is allowed to start.
    from pipelines.cli.app import build_parser
    from pipelines.cli.serve import serve_options

    good = write_keys(tmp_path, f'[[key]]\nname = "a"\nsha256 = "{"0" * 64}"\nread = ["x"]\n')
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--keys", good, "--llm", "none"])
    assert serve_options(args)[1].keys_file == good


# ---------------------------------------------------------------------------- on a real server


@pytest.fixture(scope="module")
def server(tmp_path_factory, encoder):
    from pipelines.ingest import ingest
    from rag.ingest.chunking import Chunker

    root = tmp_path_factory.mktemp("server_keys")
    store = root / "store"
    for name, (label, text) in TEXTS.items():
        (root / name).mkdir()
        (root / name / label).write_text(text)
        rep = ingest([str(root / name)], encoder=encoder, store=StoreSettings(store_dir=str(store), collection=name),
                     chunker=Chunker(48, 8), progress=False)
        assert rep.total_points == 1
    keys_file = write_keys(root, KEYS_TOML)
    cfg = RagConfig(store={"dir": str(store), "collection": "shared"}, llm={"backend": "none"})
    with pytest.MonkeyPatch.context() as mp:
        for env, key in ((ADMIN_ENV, ADMIN), (KEY_A_ENV, KEY_A), (READER_ENV, READER)):
            mp.setenv(env, key)
        app = create_app(cfg, ServeOptions(server_key_env=ADMIN_ENV, keys_file=keys_file), encoder=encoder)
    with serve_in_background(app) as url:
        yield {"url": url, "store": store, "root": root}


def client(url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)




def upload(c: httpx.Client, name: str, text: str, collection: str | None) -> httpx.Response:
    return c.post("/v1/documents", files=[("file", (name, text.encode(), "text/plain"))],
                  data={"collection": collection} if collection else None)


def sources(c: httpx.Client, collection: str) -> set[str]:
    r = c.get("/v1/documents", params={"collection": collection})
    assert r.status_code == 200, r.text
    return {d["source"] for d in r.json()["data"]}


def as_missing(r: httpx.Response, url: str, name: str, request) -> None:
    """`r` (about collection `name`) is exactly what the same request about a collection that does
    not exist gets, as the store itself answers it (asked with the key for every collection):
    status and body, the name aside."""
    with client(url, ADMIN) as admin:
        missing = request(admin, "no-such-collection")
    assert r.status_code == missing.status_code == 404, (r.text, missing.text)
    assert r.json() == missing.json() | {"error": {**missing.json()["error"], "message": missing.json()["error"][
        "message"].replace("no-such-collection", name)}}, (r.text, missing.text)
    assert r.json()["error"]["code"] == "collection_not_found"


REQUESTS = {
    "search": lambda c, n: c.post("/v1/search", json={"query": "bread flour", "collection": n}),
    "chat": lambda c, n: c.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "What is the starter fed with?"}], "rag": {"collection": n}}),
    "documents": lambda c, n: c.get("/v1/documents", params={"collection": n}),
    "delete document": lambda c, n: c.delete("/v1/documents/0123abcd", params={"collection": n}),
    "delete collection": lambda c, n: c.delete(f"/v1/collections/{n}"),
    "upload": lambda c, n: upload(c, "x.txt", "Some text about bread.", n),
}


def test_each_key_lists_only_its_collections(server):
    expect = {ADMIN: (["alpha", "beta", "shared"], "shared"), KEY_A: (["alpha", "shared"], "shared"),
              KEY_B: (["beta"], "beta"), READER: (["shared"], "shared")}
    for key, (names, default) in expect.items():
        with client(server["url"], key) as c:
            assert [m["id"] for m in c.get("/v1/models").json()["data"]] == names
            listed = c.get("/v1/collections").json()["data"]
            assert [x["id"] for x in listed] == names
            assert [x["id"] for x in listed if x["default"]] == [default]
    with httpx.Client(base_url=server["url"]) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer team-a-key"}).status_code == 401


@pytest.mark.parametrize("what", list(REQUESTS))
def test_another_keys_collection_answers_as_one_that_does_not_exist(server, what):
    before = {n: open_points(server, n) for n in TEXTS}
    with client(server["url"], KEY_A) as c:
        as_missing(REQUESTS[what](c, "beta"), server["url"], "beta", REQUESTS[what])
    with client(server["url"], KEY_B) as c:
        as_missing(REQUESTS[what](c, "alpha"), server["url"], "alpha", REQUESTS[what])
        as_missing(REQUESTS[what](c, "shared"), server["url"], "shared", REQUESTS[what])
    assert {n: open_points(server, n) for n in TEXTS} == before
    assert not list((server["store"] / ".uploads").rglob("*.txt"))  # nothing staged, nothing left


def open_points(server, name: str) -> int:
    with client(server["url"], ADMIN) as c:
        return next(x["points"] for x in c.get("/v1/collections").json()["data"] if x["id"] == name)


def test_each_key_searches_and_chats_over_its_own(server):
    for key, name in ((KEY_A, "alpha"), (KEY_A, "shared"), (KEY_B, "beta"), (READER, "shared")):
        label = TEXTS[name][0]
        with client(server["url"], key) as c:
            r = c.post("/v1/search", json={"query": TEXTS[name][1], "collection": name})
            assert r.status_code == 200 and [x["source"] for x in r.json()["results"]][0].endswith(label), r.text
            r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": TEXTS[name][1]}],
                                                     "rag": {"collection": name}})
            assert r.status_code == 200 and r.json()["sources"][0]["source"].endswith(label), r.text
    # No collection named: the key's default. A model naming another key's collection is any other
    # model name (the key's default), so it neither reaches that collection nor says it exists.
    with client(server["url"], KEY_B) as c:
        r = c.post("/v1/search", json={"query": "tomatoes"})
        assert r.status_code == 200 and {x["source"].rsplit("/", 1)[-1] for x in r.json()["results"]} == {"beta.txt"}
        r = c.post("/v1/chat/completions", json={"model": "alpha", "messages": [
            {"role": "user", "content": "What did the lighthouse keeper log?"}]})
        assert r.status_code == 200 and {s["source"].rsplit("/", 1)[-1] for s in r.json()["sources"]} <= {"beta.txt"}
        assert r.json()["model"] == "beta"


def test_each_key_uploads_to_and_deletes_in_its_own_and_jobs_are_its_own(server):
    with client(server["url"], KEY_A) as a, client(server["url"], KEY_B) as b:
        r = upload(a, "a-notes.txt", "Fog horns sounded twice a minute in dense fog.", "alpha")
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        assert wait_job(a, job_id, seconds=120)["status"] == "done"
        assert "a-notes.txt" in sources(a, "alpha")
        # The job is A's: for B it is a job that does not exist.
        theirs, none = b.get(f"/v1/jobs/{job_id}"), b.get("/v1/jobs/job-0000")
        assert theirs.status_code == none.status_code == 404
        assert theirs.json()["error"]["message"] == none.json()["error"]["message"].replace("job-0000", job_id)
        r = upload(b, "b-notes.txt", "Bake the loaf at 250 degrees for forty minutes.", None)  # B's default: beta
        assert r.status_code == 202 and r.json()["collection"] == "beta", r.text
        assert wait_job(b, r.json()["job_id"], seconds=120)["status"] == "done"
        doc = next(d for d in b.get("/v1/documents", params={"collection": "beta"}).json()["data"]
                   if d["source"] == "b-notes.txt")
        # A cannot delete B's document (404 as for a collection that does not exist); B can.
        assert a.delete(f"/v1/documents/{doc['id']}", params={"collection": "beta"}).status_code == 404
        r = b.delete(f"/v1/documents/{doc['id']}", params={"collection": "beta"})
        assert r.status_code == 200 and r.json()["deleted"], r.text
        assert "b-notes.txt" not in sources(b, "beta") and "a-notes.txt" in sources(a, "alpha")
        # Creating a collection: only a name the key may write.
        assert a.post("/v1/collections", json={"name": "beta"}).status_code == 403  # not a 409: no probing
        assert a.post("/v1/collections", json={"name": "gamma"}).status_code == 403


def test_a_read_only_key_gets_403_on_writes_and_writes_nothing(server):
    shared_doc = next(d for d in client(server["url"], ADMIN).get("/v1/documents", params={"collection": "shared"})
                      .json()["data"])
    before = {n: open_points(server, n) for n in TEXTS}
    staged_before = set((server["store"] / ".uploads").rglob("*"))
    for key in (READER, KEY_A):  # reader writes nowhere; A may write alpha but only read shared
        with client(server["url"], key) as c:
            for r in (upload(c, "evil.txt", "Tomatoes are blue.", "shared"),
                      upload(c, "evil.txt", "Tomatoes are blue.", None),  # the default: shared
                      c.delete(f"/v1/documents/{shared_doc['id']}", params={"collection": "shared"}),
                      c.delete(f"/v1/documents/{shared_doc['id']}")):
                assert r.status_code == 403, r.text
                assert r.json()["error"]["code"] == "permission_denied"
    with client(server["url"], READER) as c:
        assert c.delete("/v1/collections/shared").status_code == 403
    assert {n: open_points(server, n) for n in TEXTS} == before
    assert set((server["store"] / ".uploads").rglob("*")) == staged_before
    with client(server["url"], ADMIN) as c:
        assert "evil.txt" not in sources(c, "shared")


def test_a_keys_own_limits_apply_to_it_alone(tmp_path):
    """Team B may have 3 requests in flight (max_requests = 3): its fourth is a 429, while the
    server key's requests count against the server's limit (5 here), not B's. The key check and
    the share are the server's own middlewares, in the server's order, around an app that holds
    each request until released."""
    import asyncio

    from pipelines.server.keys import GRANT_SCOPE_KEY
    from pipelines.server.security import LimitPerClient, RequireKey

    keys = load_keys(write_keys(tmp_path, KEYS_TOML), {KEY_A_ENV: KEY_A, READER_ENV: READER})

    async def run():
        release, inside = asyncio.Event(), []

        async def app(scope, receive, send):
            inside.append(scope)
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        stack = RequireKey(LimitPerClient(app, max_requests=5), key=ADMIN, grants=keys)
        transport = httpx.ASGITransport(stack)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            async def held(key: str, n: int) -> list[asyncio.Task]:
                tasks = [asyncio.create_task(c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}))
                         for _ in range(n)]
                for _ in range(500):
                    if len(inside) >= n + held.count:
                        break
                    await asyncio.sleep(0.01)
                held.count += n
                return tasks
            held.count = 0
            b_tasks = await held(KEY_B, 3)
            fourth = await c.get("/v1/models", headers={"Authorization": f"Bearer {KEY_B}"})
            admin_tasks = await held(ADMIN, 5)  # over B's 3: the server key has the server's 5
            sixth = await c.get("/v1/models", headers={"Authorization": f"Bearer {ADMIN}"})
            release.set()
            done = await asyncio.gather(*b_tasks, *admin_tasks)
        return fourth, sixth, done, inside

    fourth, sixth, done, inside = asyncio.run(run())
    assert fourth.status_code == 429 and "3 at most" in fourth.json()["error"]["message"]
    assert sixth.status_code == 429 and "5 at most" in sixth.json()["error"]["message"]
    assert [r.status_code for r in done] == [200] * 8
    assert [s[GRANT_SCOPE_KEY].name for s in inside] == ["team-b"] * 3 + ["key #1"] * 5
