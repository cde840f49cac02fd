"""A small documentation corpus for hybrid retrieval: 30 short paragraphs, each defining one
function or constant with a unique identifier, plus a natural-language question per paragraph
whose answer is that paragraph (the identifier left out of the question).

The identifiers are what real APIs and error catalogues look like when a model cannot guess them
from their words: a module prefix shared by ten entries and a short code (`net_x27`), so an
identifier query is a test of exact terms, which dense vectors blur and BM25 keeps."""

from __future__ import annotations

from typing import Any

# (a name, what the paragraph says it does, a question about it in other words)
NAMED: list[tuple[str, str, str]] = [
    (
        "zrl_open_vault",
        "opens an encrypted vault file and returns a handle to read secrets from",
        "how do I read secrets stored in an encrypted file?",
    ),
    (
        "QXM_MAX_RETRIES",
        "is the largest number of times a failed network request is attempted again",
        "how many times is a failed request retried?",
    ),
    (
        "kvx_compact_log",
        "rewrites the append-only log so that only the newest value of each key remains",
        "how can the write-ahead log be shrunk to the latest values?",
    ),
    (
        "PBN_TIMEOUT_SECS",
        "sets how long a client waits for a server answer before giving up",
        "how long does the client wait for a reply?",
    ),
    (
        "mfq_tokenize_line",
        "splits one line of source text into words, numbers and punctuation",
        "which function breaks a line of text into tokens?",
    ),
    (
        "hdr_parse_date",
        "reads a calendar date written as day, month and year and returns a date object",
        "how do I turn a written calendar date into a date value?",
    ),
    (
        "WVT_CACHE_BYTES",
        "limits the memory the image thumbnail cache may use",
        "how much memory can the thumbnail cache take?",
    ),
    (
        "gsx_resize_image",
        "scales a picture to a new width and height, keeping its aspect ratio",
        "how do I make a picture smaller without distorting it?",
    ),
    (
        "bqz_send_email",
        "delivers a mail message to a list of recipients through the SMTP relay",
        "how are mail messages delivered to recipients?",
    ),
    (
        "ylt_hash_password",
        "derives a salted hash of a user password for storage in the database",
        "how should user passwords be stored safely?",
    ),
    (
        "NRX_DEFAULT_PORT",
        "is the TCP port the daemon listens on when none is configured",
        "which port does the service listen on by default?",
    ),
    (
        "vfo_merge_sorted",
        "combines two already sorted lists into one sorted list in linear time",
        "how do I join two ordered lists into one ordered list?",
    ),
    (
        "jpk_render_template",
        "fills the placeholders of an HTML page template with values",
        "how are HTML pages generated from templates?",
    ),
    (
        "cxw_rotate_logs",
        "renames the current log file and starts a fresh one every midnight",
        "how are log files rotated each day?",
    ),
    (
        "LFM_BATCH_ROWS",
        "is how many database rows are inserted together in one statement",
        "how many rows go into a single insert statement?",
    ),
    (
        "tqa_fetch_weather",
        "downloads the forecast for a city from the weather service",
        "how do I get the forecast for a city?",
    ),
    (
        "dwe_compress_folder",
        "packs every file of a directory into one zip archive",
        "how can a whole directory be packed into an archive?",
    ),
    (
        "RKG_LOCALE_FALLBACK",
        "names the language used when a translation is missing",
        "which language is shown when a translation is missing?",
    ),
    (
        "osn_schedule_job",
        "runs a callable at a fixed time of day, repeating daily",
        "how do I run a task every day at a fixed time?",
    ),
    (
        "umb_validate_iban",
        "checks that a bank account number has a valid checksum",
        "how can I verify a bank account number?",
    ),
    (
        "epv_stream_audio",
        "plays a sound file while it is still downloading",
        "how do I play a sound before it has finished downloading?",
    ),
    (
        "SJC_MAX_UPLOAD_MB",
        "caps the size of a file a user may upload",
        "what is the largest file a user can upload?",
    ),
    (
        "ahq_detect_language",
        "guesses which human language a piece of text is written in",
        "how can I tell what language a text is in?",
    ),
    (
        "irw_export_csv",
        "writes a table of records to a comma separated values file",
        "how do I save a table as a spreadsheet file?",
    ),
    (
        "fzc_throttle_calls",
        "limits how often a function may be called per second",
        "how do I limit the rate of calls to a function?",
    ),
    (
        "GUD_SESSION_TTL",
        "is how long a login session stays valid without activity",
        "how long does a login stay valid when idle?",
    ),
    (
        "wkb_geocode_address",
        "converts a street address into latitude and longitude",
        "how do I find the coordinates of a street address?",
    ),
    (
        "pyh_diff_texts",
        "shows the lines that changed between two versions of a document",
        "how can I see what changed between two versions of a file?",
    ),
    (
        "lqe_encrypt_blob",
        "encrypts a block of bytes with a symmetric key",
        "how do I encrypt binary data with a key?",
    ),
    (
        "MTV_WORKER_THREADS",
        "sets how many threads process jobs from the queue in parallel",
        "how many threads work on the job queue?",
    ),
]


PREFIXES = ("net", "cfg", "io")


def identifier(n: int, name: str) -> str:
    """Entry n's identifier: a shared prefix and a code derived from its position (constants
    upper-case, as the table's names are)."""
    code = f"x{(n * 7919) % 97:02d}"
    ident = f"{PREFIXES[n % 3]}_{code}"
    return ident.upper() if name.isupper() else ident


def doc_id(ident: str) -> str:
    return f"api/{ident}"


ENTRIES = [(identifier(n, name), does, q) for n, (name, does, q) in enumerate(NAMED)]


def documents() -> list[dict[str, Any]]:
    """One document per entry: '`IDENT` DOES.' with a short second sentence, its kind in the
    metadata (constant or function), so filters can be tried."""
    return [
        {
            "id": doc_id(ident),
            "text": f"{ident} {does}. See the reference manual for the details.",
            "metadata": {"kind": "constant" if ident.isupper() else "function"},
        }
        for ident, does, _ in ENTRIES
    ]


def identifier_queries() -> list[tuple[str, str]]:
    """(query, the doc id that answers it): each identifier alone."""
    return [(ident, doc_id(ident)) for ident, _, _ in ENTRIES]


def questions() -> list[tuple[str, str]]:
    """(natural-language question, the doc id that answers it)."""
    return [(question, doc_id(ident)) for ident, _, question in ENTRIES]


def recall_at(hits_for: Any, queries: list[tuple[str, str]], k: int) -> float:
    """The share of queries whose answer is among the first k hits of `hits_for(query, k)`."""
    found = sum(answer in [h.doc_id for h in hits_for(q, k)] for q, answer in queries)
    return found / len(queries)
