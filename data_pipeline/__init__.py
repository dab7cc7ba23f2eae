"""The GM collection: hyperparameter schema, GM zoo, ingest, Parquet storage, Ray Data readers.

Submodules are imported explicitly (``from data_pipeline import schema``) so that light
users such as ``models`` do not pull in Ray or pyarrow.
"""
