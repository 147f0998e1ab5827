"""The data family: a dataset as softcache holds it, and everything that makes one.

`dataset` (the in-memory type, its checks and fingerprint), `prepare` (IDX, .npz and the prepared file:
find, read, write), `folder_files` (the files a user's folder holds, links out of it refused),
`image_folder` (folders of image files), `image_store` (prepared images on disk, read a
batch at a time), `transfer` (unlabelled transfer sets), `label_subsets` (class-balanced label subsets);
for text, `text` (corpora and their splits), `tokenizers` (bytes, BPE, a local tokenizer.json) and
`windows` (a corpus prepared into token arrays, read a window at a time).

May import: the foundations (pipeline.errors, files, digests, settings, names, augment). Nothing else in pipeline.
"""
