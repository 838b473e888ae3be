-- A chunk row (its text, a 1,536-byte vector at 384 dimensions, the generated tsvector and metadata) is about
-- 3-4 KB, over PostgreSQL's default 2 KB TOAST threshold: every insert ran pglz over the vector, which is
-- random-looking floats that never compress, and then over the text, and searches detoasted what it compressed.
-- Rows up to a page's worth now stay inline and uncompressed; only much larger chunks are toasted.
ALTER TABLE chunks SET (toast_tuple_target = 8160);
