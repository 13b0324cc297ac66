"""The triage worklist service, shared by the REST API (``/api/v1/triage``) and the web UI
(``/worklist``): the ranked query with the maximum-wait ceiling (``worklist``), marking an exam
read and revealing its accession number on record (``actions``), and server-side thumbnails of
the de-identified views (``thumbs``).

Everything here reads pseudonymous data only (``triage_entries``, ``score_results``, the output
folder), except ``actions.reveal_accession``, which writes the audit event before it decrypts
the one original it returns.
"""
