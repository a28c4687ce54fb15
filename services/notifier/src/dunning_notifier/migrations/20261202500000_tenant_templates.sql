-- migrate:up
-- A tenant's own reminder templates (tenant_templates.py): every save is a new version of the
-- (stage key, channel, locale) it overrides; a DELETE is a version too (`parts` NULL: the shipped
-- default applies again). The active template is the latest version when it has parts.
CREATE TABLE template_versions (
    tenant_id   text        NOT NULL,
    key         text        NOT NULL,                -- the stage key (soft, firm, ...) or generic
    channel     text        NOT NULL,                -- email | sms | letter
    locale      text        NOT NULL,                -- de-AT, de, en, ...
    version     integer     NOT NULL CHECK (version > 0),
    parts       jsonb,                               -- {"subject": ..., "text": ..., "html": ...}; NULL: deleted
    saved_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key, channel, locale, version)
);

-- A tenant's brand (brand.py): sender, reply-to, logo, colours, signature, postal address, bank details.
CREATE TABLE brands (
    tenant_id      text PRIMARY KEY,
    settings       jsonb       NOT NULL,             -- the validated document (brand.BrandDocument)
    logo           bytea,                            -- an uploaded PNG or SVG, size-limited
    logo_type      text CHECK (logo_type IN ('image/png', 'image/svg+xml')),
    logo_id        text,                             -- the upload's content hash: its public URL's name
    version        integer     NOT NULL DEFAULT 1,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX brands_logo_id ON brands (logo_id) WHERE logo_id IS NOT NULL;  -- the same bytes may be two tenants'

-- Bumped in the transaction of every template save/delete and brand change: the renderer's
-- in-process cache of a tenant's templates and brand is keyed by (tenant, stamp).
CREATE TABLE template_stamps (
    tenant_id   text PRIMARY KEY,
    stamp       bigint      NOT NULL DEFAULT 1,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

-- migrate:down
DROP TABLE template_stamps;
DROP TABLE brands;
DROP TABLE template_versions;
