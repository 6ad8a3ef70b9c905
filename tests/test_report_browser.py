"""The report as a reader sees it: rendered by headless Chromium at 1280×800.

Checks, from the laid-out page: the headline is above the first screen's fold, no element overflows
horizontally (also with every <details> opened), every image has loaded, the MathML equations are rendered
as MathML. A copy of the page gets a small script that measures the layout and writes the result into the
DOM, which ``chromium --dump-dom`` prints (the report itself has no JavaScript). A screenshot of the first
screen is kept in ``.pytest_cache/d/report-browser/``.

Skips where Chromium is missing, unless ``SINDYRL_REQUIRE_CHROMIUM=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess

import pytest
from report_run import make_report_run

from sindyrl.report import write_report

WIDTH, HEIGHT = 1280, 800


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = _chromium()
if CHROMIUM is None:
    if os.environ.get("SINDYRL_REQUIRE_CHROMIUM") == "1":
        raise RuntimeError("SINDYRL_REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install chromium)")
    pytest.skip("headless Chromium not installed (apt-get install chromium)", allow_module_level=True)

_PROBE = """
<script>
window.addEventListener('load', () => {
  const vw = document.documentElement.clientWidth;
  function who(el) {
    return el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + (el.className && el.className.baseVal === undefined
      ? '.' + String(el.className).split(' ').join('.') : '') + ' "' + (el.textContent || '').slice(0, 40) + '"';
  }
  function overflow() {
    const bad = [];
    for (const el of document.querySelectorAll('body *')) {
      if (el.id === 'probe') continue;
      const r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue;
      if (r.right > vw + 0.5 || r.left < -0.5) bad.push(who(el) + ' spans ' + r.left.toFixed(0) + '..' + r.right.toFixed(0));
      const ox = getComputedStyle(el).overflowX;
      if ((ox === 'auto' || ox === 'scroll') && el.scrollWidth > el.clientWidth + 1) bad.push(who(el) + ' scrolls sideways');
    }
    if (document.documentElement.scrollWidth > vw) bad.push('page scrolls sideways: ' + document.documentElement.scrollWidth);
    return bad;
  }
  const head = document.getElementById('headline');
  const res = {
    viewport: [window.innerWidth, window.innerHeight], client_width: vw,
    headline_bottom: head ? head.getBoundingClientRect().bottom + window.scrollY : null,
    headline_text: head ? head.innerText : '',
    overflow_closed: overflow(),
    images: Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]),
    math: document.getElementsByTagName('math').length,
    math_native: document.getElementsByTagName('math').length > 0 &&
      document.getElementsByTagName('math')[0] instanceof MathMLElement,
    math_laid_out: Array.from(document.getElementsByTagName('math')).filter(m => m.getBoundingClientRect().width > 0).length,
    equations: document.querySelectorAll('.eq').length,
    eq_lines: Array.from(document.querySelectorAll('.eq .rhs')).map(r => Math.round(r.getBoundingClientRect().height)),
  };
  document.querySelectorAll('details').forEach(d => d.open = true);
  res.overflow_open = overflow();
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(res);
  document.body.appendChild(pre);
});
</script>
"""

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--disable-component-update", "--no-first-run", "--hide-scrollbars", f"--window-size={WIDTH},{HEIGHT}"]


def _chromium_run(tmp_path, *args: str) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    cmd = [CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise AssertionError(f"chromium failed ({out.returncode}): {out.stderr[-2000:]}")
    return out.stdout


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("browser")
    run = make_report_run(tmp / "runs", "demo")
    page = write_report(run)["html"]
    probe = page.with_name("report-probe.html")
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    dom = _chromium_run(tmp, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    m = re.search(r"<pre id=\"probe\">(.*?)</pre>", dom, re.S)
    assert m, f"layout probe did not run; DOM starts {dom[:500]!r}"
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    shot_dir = cache.mkdir("report-browser") if cache is not None else tmp
    shot = shot_dir / f"report-{WIDTH}x{HEIGHT}.png"
    _chromium_run(tmp, f"--screenshot={shot}", page.as_uri())
    return json.loads(html.unescape(m.group(1))), shot, run


def test_screenshot_is_kept(rendered):
    _, shot, _ = rendered
    assert shot.is_file() and shot.stat().st_size > 10_000, shot
    print(f"screenshot: {shot}")


def test_headline_figures_are_above_the_fold(rendered):
    res, _, run = rendered
    # a 1280x800 window; --dump-dom's viewport is that less the window's own chrome (about 650 px high), as on
    # a reader's screen, so the headline must fit the smaller of the two
    width, height = res["viewport"]
    assert width == WIDTH and 500 <= height <= HEIGHT, res["viewport"]
    assert res["headline_bottom"] is not None and res["headline_bottom"] <= height, (res["headline_bottom"], height)
    text = res["headline_text"]
    s = run.read_summary()
    for figure in ("Pendulum-v1", "REAL STEPS", f"{s['real_steps_total']:,}".replace(",", "\u202f"),
                   "FINAL RETURN", "worst episode", f"{s['sparse_policy_return_min']:,.1f}".replace(",", "\u202f"),
                   "4\u202f481 network weights", "6\u202f828 B", "125 instructions", "robust"):
        assert figure in text, (figure, text)


def test_nothing_overflows_horizontally(rendered):
    res, _, _ = rendered
    assert res["overflow_closed"] == []
    assert res["overflow_open"] == []  # also with the configuration, file list and plain equations opened


def test_every_image_has_loaded(rendered):
    res, _, _ = rendered
    assert len(res["images"]) >= 5
    for alt, complete, w, h in res["images"]:
        assert complete and w > 0 and h > 0, alt


def test_equations_are_rendered_mathml(rendered):
    res, _, _ = rendered
    assert res["math_native"], "MathML elements are not MathMLElement: the browser does not render MathML"
    assert res["equations"] == 4 and res["math"] > 30 and res["math_laid_out"] == res["math"]
    # the 20-term policy wraps onto more than one line instead of running off the page
    assert max(res["eq_lines"]) > 1.6 * min(res["eq_lines"]), res["eq_lines"]
