"""Where a store keeps its objects: the interface (`base`), a local folder (`local`), an S3-compatible
bucket (`s3`). `open_storage` picks one from what the user named (a folder, or `s3://bucket/prefix`)."""
