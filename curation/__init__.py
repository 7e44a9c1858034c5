"""curation: the DuckDB store, verification, dedup, decontamination, purification and exports.

`from curation import Curation` gives the notebook API (curation/api.py).
"""


def __getattr__(name: str):
    if name == "Curation":  # lazy: importing the package stays cheap for the CLI
        from curation.api import Curation
        return Curation
    raise AttributeError(name)
