-- buildd schema, version 13: archives and their dependencies (Launchpad's archive dependencies).
--
-- An archive is the distribution's primary one or a PPA (public or private), with its URL, its signing key
-- and the archives its builds draw from, each in a pocket and a component. A build may name its archive;
-- a job carries the apt sources BuilddCore's `ArchiveDependencies.sources` expands from them (pocket and
-- component dependencies, and the primary archive every other archive builds on), worked out when the
-- build is dispatched. A farm with no archives gives jobs no sources: builds use their chroot's own.
CREATE TABLE archive (
    id                  serial PRIMARY KEY,
    name                text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9.+_-]{0,63}$'),
    kind                text NOT NULL CHECK (kind IN ('primary', 'ppa')),
    -- A primary archive is its distribution's; one per distribution.
    distribution        text,
    url                 text NOT NULL CHECK (url ~ '^https?://[^][ \n]+$' AND octet_length(url) <= 2048),
    private             boolean NOT NULL DEFAULT false,
    signing_key         text CHECK (octet_length(signing_key) <= 65536),
    build_debug_symbols boolean NOT NULL DEFAULT false,
    date_created        timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'primary') = (distribution IS NOT NULL)),
    CHECK (NOT (kind = 'primary' AND private))
);
CREATE UNIQUE INDEX archive_one_primary ON archive (distribution) WHERE kind = 'primary';

CREATE TABLE archive_dependency (
    archive_id    integer NOT NULL REFERENCES archive ON DELETE CASCADE,
    dependency_id integer NOT NULL REFERENCES archive,
    position      integer NOT NULL,
    pocket        text NOT NULL CHECK (pocket IN ('release', 'security', 'updates', 'proposed', 'backports')),
    component     text CHECK (component IN ('main', 'restricted', 'universe', 'multiverse', 'partner')),
    PRIMARY KEY (archive_id, dependency_id),
    CHECK (archive_id <> dependency_id)
);

-- `dependencies`: the relation a MANUALDEPWAIT build's builder said is missing (BuilddCore's `DepWait`); the
-- masters' dep-wait pass retries the build once its archives' Packages indexes satisfy it.
ALTER TABLE build
    ADD COLUMN archive_name text REFERENCES archive (name),
    ADD COLUMN arch_indep   boolean NOT NULL DEFAULT false,
    ADD COLUMN dependencies text CHECK (octet_length(dependencies) <= 4096);
-- The pass finds them through `dependencies` alone (set when a build ends MANUALDEPWAIT, cleared when it is
-- retried): an index whose predicate named `status` would make every status change a non-HOT update.
CREATE INDEX build_dep_waiting ON build (id) WHERE dependencies IS NOT NULL;
