"""`mirror serve`: a read-only hub over a store, for a fleet behind the air gap.

One origin answers both the Hugging Face Hub API (`HF_ENDPOINT`) and the ModelScope API
(`MODELSCOPE_ENDPOINT`), from what the store holds: complete commit records and refs, written by
`mirror sync` or `mirror import --layout store`.

    view        what the store holds, read fresh on each request (a bundle imported while serving shows)
    policing    what the policy (`--policy FILE`) refuses to serve, and why (a 403 with the reason)
    hf          the Hugging Face routes: resolve, revision and repo info, tree, paths-info, refs
    modelscope  the ModelScope routes: files, file download, revisions, model info
    catalogue   GET /: the page a person reads
    files       a held file as a response (whole by the server's zero-copy path, or a Range), for both APIs
    app         the ASGI application: the routes above behind access control and the access log
    server      runs the application on granian, `--workers` processes sharing the port
"""
