"""Media: presigned uploads to S3-compatible object storage, media URLs, and the objects' lifecycle.

- sigv4.py     the pure AWS Signature V4 signer;
- storage.py   ObjectStorage: presigned URLs (local) and the few S3 calls (httpx), StorageMonitor (health);
- uploads.py   the upload rules: allowed types, sizes, keys;
- embedded.py  the zero-setup SeaweedFS child process;
- lifecycle.py MediaSweeper: deletes the objects no story can reach any more (run by the expiry worker).
"""
