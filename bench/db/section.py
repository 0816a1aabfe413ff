"""Replaces one "## Title" section of BENCHMARKS.md, leaving the others
untouched (shared by the database benchmark's report scripts)."""
import os


def replace_section(bench_md, title, section, before=None):
    """Writes `section` (starting with `## title`) in place of the old one;
    a missing one goes before the `## before` section, or at the end."""
    text = open(bench_md).read() if os.path.exists(bench_md) else "# Benchmarks\n\n"
    start = text.find(f"## {title}")
    if start < 0:
        anchor = text.find(f"## {before}") if before else -1
        if anchor < 0:
            text = text.rstrip("\n") + "\n\n" + section
        else:
            text = text[:anchor] + section + "\n" + text[anchor:]
    else:
        nxt = text.find("\n## ", start + 3)
        end = len(text) if nxt < 0 else nxt + 1
        text = text[:start] + section + ("\n" if nxt >= 0 else "") + text[end:]
    open(bench_md, "w").write(text)
