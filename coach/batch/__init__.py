"""Batch review jobs (`coach batch`): streaming inputs (`inputs`), HTML text extraction and
markup-preserving rewrites (`html`), atomic result writers (`outputs`) and the end-of-run
summary (`summary`)."""
