"""The shared plotting style and the index page `jaxalign reproduce` writes."""

from __future__ import annotations

import importlib.util
import json
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from jaxalign import experiment, plotting

# Two cheap experiments, shrunk further: a few seconds each on a 2-core CPU.
_CHEAP = {
    "asymptotics": ["lengths=[10,50]", "frontier_lengths=[1,4]", "frontier_points=4"],
    "onpo-duality-gap": ["num_games=2", "num_steps=200", "num_responses=4"],
}


def _readme_numbers():
    path = experiment.repo_root() / "scripts" / "readme_numbers.py"
    spec = importlib.util.spec_from_file_location("readme_numbers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """Both cheap experiments reproduced into one folder; the figure warnings they raised."""
    out = tmp_path_factory.mktemp("figs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, overrides in _CHEAP.items():
            experiment.reproduce(experiment.get(name), out=out, overrides=overrides, quiet=True)
    figure_warnings = [str(w.message) for w in caught if " figure: " in str(w.message)]
    return out, figure_warnings


def test_index_lists_every_run_with_figure_numbers_config_and_wall_time(reproduced):
    out, _ = reproduced
    html = (out / "index.html").read_text()
    for name, overrides in _CHEAP.items():
        meta = json.loads((out / f"{name}.json").read_text())
        assert meta["headline"], name  # both name their headline numbers
        assert f'<section id="{name}">' in html
        assert f'<img src="{name}.png"' in html  # relative: the folder can be moved
        assert meta["description"].split(":")[0] in html
        for key, value in experiment.headline_numbers(meta):
            assert f"<th>{key}</th>" in html
            assert experiment.format_number(value) in html
        assert f"{meta['wall_seconds']:.1f} s" in html
        assert f"# overrides: {' '.join(overrides)}" in html
    assert "lengths: [10, 50]" in html  # the config, as YAML
    assert "profile <b>quick</b>" in html
    x_star = json.loads((out / "asymptotics.json").read_text())["summary"]["x_star"]
    assert f"{x_star:.4g}" in html


def test_index_is_well_formed_html_whose_links_and_images_resolve(reproduced):
    """What a browser needs: balanced elements, one <title>, and every local link and image
    present in the folder (the images real, non-empty PNG files)."""
    from html.parser import HTMLParser

    out, _ = reproduced
    void = {"meta", "img", "br", "hr", "link", "input"}

    class Checker(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.errors, self.refs, self.titles = [], [], [], 0

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            self.titles += tag == "title"
            if tag == "img":
                self.refs.append(("img", attrs.get("src", "")))
                assert attrs.get("alt"), "every image has alt text"
            if tag == "a" and not attrs.get("href", "#").startswith("#"):
                self.refs.append(("a", attrs["href"]))
            if tag not in void:
                self.stack.append(tag)

        def handle_endtag(self, tag):
            if not self.stack or self.stack.pop() != tag:
                self.errors.append(f"unbalanced </{tag}> at {self.getpos()}")

    checker = Checker()
    checker.feed((out / "index.html").read_text())
    checker.close()
    assert checker.errors == [] and checker.stack == [] and checker.titles == 1
    images = [ref for kind, ref in checker.refs if kind == "img"]
    assert sorted(images) == sorted(f"{name}.png" for name in _CHEAP)
    for _, ref in checker.refs:
        assert "/" not in ref and (out / ref).is_file(), ref  # relative, inside the folder
    for ref in images:
        data = (out / ref).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, ref


def test_report_md_lists_the_same_runs(reproduced):
    out, _ = reproduced
    md = (out / "REPORT.md").read_text()
    for name in _CHEAP:
        assert f"## {name}" in md
        assert f"![{name}]({name}.png)" in md
    slopes = json.loads((out / "onpo-duality-gap.json").read_text())["summary"]["slopes"]
    assert f"ONPO: {slopes['ONPO']:.4g}" in md
    assert "```yaml" in md


def test_readme_numbers_script_prints_headline_numbers_with_profile(reproduced, capsys):
    out, _ = reproduced
    assert _readme_numbers().main([str(out)]) == 0
    text = capsys.readouterr().out
    assert "## asymptotics  (profile quick" in text
    assert "## onpo-duality-gap  (profile quick" in text
    assert "onpo_max_ratio_to_2D_over_etaT" in text
    assert _readme_numbers().main([str(out / "empty")]) == 2


def test_reproduced_figures_have_no_raw_tex_or_overlapping_titles(reproduced):
    _, figure_warnings = reproduced
    assert figure_warnings == []


def test_a_foreign_index_is_left_alone(tmp_path):
    (tmp_path / "index.html").write_text("<html>mine</html>")
    meta = {"experiment": "x", "description": "d", "summary": {"a": 1.0}, "config": {"k": 1}}
    (tmp_path / "x.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="not written by jaxalign"):
        written = experiment.write_report(tmp_path)
    assert set(written) == {"md"}
    assert (tmp_path / "index.html").read_text() == "<html>mine</html>"
    assert "| `a` | 1 |" in (tmp_path / "REPORT.md").read_text()


def test_raw_tex_finds_markup_matplotlib_prints_verbatim():
    fig, ax = plt.subplots()
    ax.set_title("KL(T(π_t) ‖ π_{t+1})")
    ax.set_xlabel(r"target $\pi_{\mathrm{ref}} e^{r/\beta}$")  # mathtext: fine
    ax.set_ylabel("pairs in R^10")
    ax.plot([0, 1], [0, 1], label="weighted_sum")  # a snake_case name: fine
    ax.plot([0, 1], [1, 0], label="target π_ref e^{r/β}")
    ax.legend()
    assert sorted(plotting.raw_tex(fig)) == sorted(
        ["KL(T(π_t) ‖ π_{t+1})", "pairs in R^10", "target π_ref e^{r/β}"]
    )
    plt.close(fig)


def test_constrained_figures_keep_the_suptitle_clear_of_panel_titles():
    def two_panels(make):
        fig, axes = make()
        for ax in axes:
            ax.set_title("a two-line panel title\nwith a second line")
        fig.suptitle("a figure title long enough to reach over both of the panel titles")
        return fig

    crowded = two_panels(lambda: plt.subplots(1, 2, figsize=(8, 3)))
    assert plotting.overlapping_titles(crowded)  # the check can fail
    clean = two_panels(lambda: plotting.figure(1, 2))
    assert plotting.overlapping_titles(clean) == []
    plt.close("all")


def test_reference_lines_and_bands_sit_under_the_data():
    with plotting.style():
        fig, (ax,) = plotting.figure()
        (data,) = ax.plot([1, 2, 3], [3, 2, 1])
        ref = plotting.reference_line(ax, [1, 3], [3, 1], label="slope guide")
        level = plotting.reference_line(ax, y=2.0, horizontal=True)
        band = plotting.band(ax, [1, 2, 3], [2, 1, 0], [4, 3, 2], color=data.get_color())
        assert band.get_zorder() < ref.get_zorder() < data.get_zorder()
        assert level.get_zorder() < data.get_zorder()
        assert data.get_color() == plotting.PALETTE[0]  # the shared colour cycle
    plt.close(fig)


def test_panel_grid_removes_unused_cells():
    fig, axes = plotting.panel_grid(5, max_cols=3)
    assert len(axes) == 5 and len(fig.axes) == 5
    plt.close(fig)
