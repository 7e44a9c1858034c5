"""The viewer's pages over HTTP (a real loopback server): what each shows, filters, paging, escaping."""
from __future__ import annotations

import re

import httpx
import pytest

from tests.view.seed import ATTR, SCRIPT


def get(viewer, path: str, **kw) -> httpx.Response:
    return httpx.get(viewer.url + path.lstrip("/"), timeout=30, **kw)


def ok(viewer, path: str) -> str:
    r = get(viewer, path)
    assert r.status_code == 200, (path, r.status_code, r.text[-500:])
    assert r.headers["content-type"].startswith("text/html")
    return r.text


def prompt_ids(html: str) -> list[str]:
    return re.findall(r'class="prompt-link">([^<]+)<', html)


def test_index_lists_pools_evals_and_counts(viewer, seeded):
    html = ok(viewer, "/")
    assert 'href="/pools/yesno"' in html and 'href="/evals/eval-test"' in html
    assert "samples 68" in html and "1 run(s) running" in html


def test_every_page_sends_a_policy_that_allows_no_script(viewer):
    r = get(viewer, "/")
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp  # default-src 'none' covers scripts
    assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Referrer-Policy"] == "no-referrer"
    assert "<script" not in r.text and "http://" not in r.text.replace(viewer.url, "")  # nothing external


def test_runs_show_status_cost_tokens_errors_and_live_progress(viewer, seeded):
    html = ok(viewer, "/runs")
    for status in ("running", "failed", "done"):
        assert f'class="status-{status}"' in html
    assert "RateLimitError 1" in html and "$0.0800" in html and "rows/s" in html
    assert '<meta http-equiv="refresh" content="5">' in html  # a run is running: the page re-reads itself
    curate = ok(viewer, "/runs?stage=curate")
    assert seeded.runs["failed"] in curate and seeded.runs["done"] not in curate
    assert "ValueError: bad &lt;script&gt;" in curate


def test_a_running_run_shows_rows_per_second_and_money_so_far(viewer, seeded):
    html = ok(viewer, f"/runs/{seeded.runs['running']}")
    assert "Live progress" in html and "$ so far" in html and "$0.0800" in html
    assert "rows/s since start" in html and "done 8" in html and "error 1" in html
    assert "<th>cache hits</th><td>17 (requests found finished" in html and "<td>17</td>" in html
    assert 'http-equiv="refresh"' in html
    done = ok(viewer, f"/runs/{seeded.runs['done']}")
    assert "Live progress" not in done and 'http-equiv="refresh"' not in done and "12.5" in done


def test_pool_pages_by_fifty_with_links_that_keep_the_filters(viewer):
    first = ok(viewer, "/pools/yesno")
    assert len(prompt_ids(first)) == 50 and "1&ndash;50 of 61" in first
    assert 'href="/pools/yesno?page=2"' in first
    second = ok(viewer, "/pools/yesno?page=2")
    assert len(prompt_ids(second)) == 11 and not set(prompt_ids(first)) & set(prompt_ids(second))
    train = ok(viewer, "/pools/yesno?split=train")
    assert 'href="/pools/yesno?split=train&amp;page=2"' not in train  # 21 train prompts: one page
    assert all(i in ("p-main",) or int(i[2:]) % 3 == 0 for i in prompt_ids(train))


@pytest.mark.parametrize("query, expected", [
    ("teacher=teacher-b&outcome=failed", ["p-main"]),
    ("contaminated=yes", ["p-main"]),
    ("dedup=dropped", ["p-main"]),
    ("dedup=kept", ["p-main"]),
    ("purified=picked", ["p-main"]),
    ("kind=critique", ["p-main"]),
    ("kind=tool_step", ["p-main"]),
    ("q=PEAR", ["p-main"]),  # search ignores case
    ("q=question+7%29", ["p-007"]),  # literal text: the ')' is no pattern
    ("q=thinking+about+42", ["p-042"]),  # a sample's text
    ("q=100%25", []),  # '%' is no wildcard
    ("teacher=teacher-b&outcome=passed", []),  # both must hold for the same sample
    ("outcome=unverified&split=test&teacher=teacher-a", ["p-005", "p-011", "p-017", "p-023", "p-029", "p-035",
                                                         "p-041", "p-047", "p-053", "p-059"]),
])
def test_pool_filters_and_search(viewer, query, expected):
    assert prompt_ids(ok(viewer, f"/pools/yesno?{query}")) == expected


@pytest.mark.parametrize("query", ["split=nope", "outcome=maybe", "teacher=%3Cscript%3E", "page=0", "page=x",
                                   "q=" + "x" * 300])
def test_a_bad_filter_is_400_with_one_line(viewer, query):
    r = get(viewer, f"/pools/yesno?{query}")
    assert r.status_code == 400 and '<p class="error">' in r.text and "<script>" not in r.text


def test_one_prompt_shows_gold_rationale_and_every_teacher_side_by_side(viewer):
    html = ok(viewer, "/prompts/p-main")
    assert '<td id="gold">No</td>' in html and "Pears are less dense than water." in html
    assert html.index("<h3>teacher-a</h3>") < html.index("<h3>teacher-b</h3>")
    assert 'class="reasoning">Pears float because' in html and 'class="answer">No</pre>' in html
    assert "tool-call rollout, 2 step(s)" in html and "calculator[0.6/1.0]" in html
    assert 'class="observation">0.6 &lt;script&gt;' in html  # the tool's output, escaped
    assert 'critique of\n      <a href="#sample-s-a1">' in html and '<a href="#sample-s-crit">critique s-crit</a>' in html
    assert "judge:judge-m: score 0.80 (helpfulness 4, honesty 4)" in html
    assert '<a href="/clusters/minhash/c-a1">cluster c-a1</a> of 2 · kept' in html and "of 2 · dropped" in html
    assert "picked by purification <b>verified_first</b>" in html and "contaminated</span>" in html
    assert 'class="call">calculator({"x": "0.6/1.0"})</pre>' in html  # the trajectory's tool call


@pytest.mark.parametrize("path", ["/prompts/p-main", "/pairs", "/runs?stage=curate", "/evals/eval-test?split=test"])
def test_teacher_output_is_text_never_markup(viewer, path):
    html = ok(viewer, path)
    assert SCRIPT not in html and ATTR not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html or "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html


def test_a_cluster_shows_who_was_kept_why_and_the_differences(viewer):
    html = ok(viewer, "/clusters/minhash/c-a1")
    assert re.search(r'<tr class="kept"><td>1</td>\s*<td><a href="/prompts/p-main#sample-s-a1">', html)
    assert "the kept member has the higher mean judge score (0.800 vs 0.000)" in html
    assert "<ins> much</ins>" in html and "word similarity to the kept one" in html
    assert "The stored keep flag" not in html  # the order today agrees with what dedup stored


def test_pairs_side_by_side_with_strategy_and_margin(viewer):
    html = ok(viewer, "/pairs?strategy=verified")
    assert "<b>verified</b> margin 1.000" in html
    assert html.index('class="column chosen"') < html.index('class="column rejected"')
    assert "s-a1" in html.split('class="column rejected"')[0] and "s-b1" in html.split('class="column rejected"')[1]
    assert "no pairs match" in ok(viewer, "/pairs?pool=yesno&strategy=verified&page=2")


def test_an_eval_shows_its_rows_plots_and_filterable_queries(viewer):
    html = ok(viewer, "/evals/eval-test")
    assert "80.0%" in html and "threshold 0.5" in html
    for name in ("cascade.png", "reliability.png", "risk_coverage.png"):
        assert f'src="/evals/eval-test/plots/{name}"' in html
    assert "slices.png" not in html  # a link out of the report folder is no plot
    assert html.count('<a href="/prompts/p-') == 20
    picked = ok(viewer, "/evals/eval-test?escalated=yes&student=right")
    rows = re.findall(r'<a href="/prompts/(p-\d+)">', picked)
    assert rows == ["p-011", "p-023", "p-035", "p-047", "p-059"]  # j = 3, 7, 11, 15, 19
    assert "student says 3 <small>(right)</small>" in picked and "teacher says 3 <small>(wrong)</small>" in picked
    none = ok(viewer, "/evals/eval-test?escalated=no&student=wrong")
    assert "no query matches" in none


def test_eval_plots_come_only_from_known_names_in_the_report_folder(viewer, seeded):
    r = get(viewer, "/evals/eval-test/plots/cascade.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content.startswith(b"\x89PNG")
    for path in ["/evals/eval-test/plots/report.md", "/evals/eval-test/plots/slices.png",
                 "/evals/eval-test/plots/..%2Fsecret.txt", "/evals/eval-test/plots/..%2F..%2Fsecret.txt",
                 "/evals/..%2F..%2Fsecret.txt/plots/cascade.png", "/evals/nope/plots/cascade.png",
                 "/static/..%2Fapp.py", "/static/view.css%00.png"]:
        r = get(viewer, path)
        assert r.status_code == 404, path
        assert b"not for the browser" not in r.content


def test_dot_segments_sent_raw_reach_no_file(viewer):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", viewer.port, timeout=30)
    for path in ["/evals/eval-test/plots/../../secret.txt", "/evals/eval-test/plots/../../../etc/passwd",
                 "/static/../app.py", "/../../etc/passwd"]:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        assert r.status == 404 and b"not for the browser" not in body and b"root:" not in body, path
    conn.close()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", ["/", "/runs", "/pools/yesno", "/nope"])
def test_anything_but_get_is_405(viewer, method, path):
    r = httpx.request(method, viewer.url + path.lstrip("/"), content=b"x=1", timeout=30)
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"


def test_unknown_pages_and_ids_are_404(viewer):
    for path in ["/nope", "/prompts/nope", "/runs/nope", "/pools/nope", "/clusters/minhash/nope", "/evals/nope"]:
        assert get(viewer, path).status_code == 404, path


def test_a_request_addressed_to_another_host_name_is_refused(viewer):
    # DNS rebinding: a page of evil.example whose name now points at 127.0.0.1 sends Host: evil.example.
    r = get(viewer, "/", headers={"Host": "evil.example"})
    assert r.status_code == 403
    assert get(viewer, "/", headers={"Host": f"localhost:{viewer.port}"}).status_code == 200
