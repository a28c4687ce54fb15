-- migrate:up
-- A statement's lines and line keys no longer check their statement by foreign key: an import writes
-- 2 rows per line, and each row's check (a `SELECT ... FOR KEY SHARE` on the statement, 40,000 on
-- the statements bench) was some 4 % of PostgreSQL's time there. Only the import writes these
-- rows, inside the transaction that holds the statement's row locked (statements_import's
-- _import_chunk), and no statement is ever deleted, so the reference cannot dangle.

ALTER TABLE statement_lines DROP CONSTRAINT statement_lines_statement_id_fkey;
ALTER TABLE statement_line_keys DROP CONSTRAINT statement_line_keys_statement_id_fkey;

-- migrate:down
ALTER TABLE statement_line_keys
    ADD CONSTRAINT statement_line_keys_statement_id_fkey FOREIGN KEY (statement_id) REFERENCES statements (statement_id);
ALTER TABLE statement_lines
    ADD CONSTRAINT statement_lines_statement_id_fkey FOREIGN KEY (statement_id) REFERENCES statements (statement_id);
