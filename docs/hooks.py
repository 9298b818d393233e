"""MkDocs hook: serve the repository files that the pages link to with ``../`` (results, presets, LICENSE).

The pages are also read on GitHub, where ``../results/learning_curves.png`` from ``docs/results.md`` is the
repository's file. MkDocs only knows files inside ``docs/``, so ``--strict`` would reject those links and the site
would lack the pictures. This hook adds each such linked file to the site under its repository path (for example
``results/learning_curves.png``); MkDocs then checks and rewrites the links as for any page. A link to a missing
file stays unknown, so ``--strict`` still fails on it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files, InclusionLevel

# [text](target) and ![alt](target), target up to a space (a title) or the closing parenthesis
_LINK = re.compile(r"\]\((?P<target>[^)\s#]+)(?:#[^)\s]*)?(?:\s+\"[^\"]*\")?\)")


def _outside_targets(page: File) -> set[str]:
    """Targets of the page's relative links that leave ``docs/``, as MkDocs resolves them (``../results/x.png``)."""
    text = Path(page.abs_src_path).read_text(encoding="utf-8")
    targets = set()
    for match in _LINK.finditer(text):
        target = match["target"]
        if "://" in target or target.startswith(("/", "mailto:")):
            continue
        uri = posixpath.normpath(posixpath.join(posixpath.dirname(page.src_uri), target))
        if uri.startswith("../") and not uri.endswith(".md"):
            targets.add(uri)
    return targets


def on_files(files: Files, config: MkDocsConfig) -> Files:
    docs_dir = Path(config.docs_dir)
    repository = docs_dir.parent
    for page in files.documentation_pages():
        for uri in sorted(_outside_targets(page)):
            source = (docs_dir / uri).resolve()
            if files.get_file_from_path(uri) is None and source.is_file() and repository in source.parents:
                files.append(
                    File(
                        uri,
                        src_dir=str(docs_dir),
                        dest_dir=config.site_dir,
                        use_directory_urls=config.use_directory_urls,
                        dest_uri=source.relative_to(repository).as_posix(),
                        inclusion=InclusionLevel.INCLUDED,
                    )
                )
    return files
