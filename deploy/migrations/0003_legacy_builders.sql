-- buildd schema, version 3: legacy XML-RPC builders (launchpad-buildd).
-- Which master follows a legacy builder and until when (renewed every tick; another master takes over
-- a builder whose lease ran out).
ALTER TABLE builder ADD COLUMN legacy_master text;
ALTER TABLE builder ADD COLUMN legacy_lease_until timestamptz;
CREATE INDEX builder_legacy_lease ON builder (legacy_lease_until) WHERE kind = 'xmlrpc';
-- launchpad-buildd names files by SHA-1: kept beside the SHA-256 of sources and chroots.
ALTER TABLE source_file ADD COLUMN sha1 text CHECK (sha1 IS NULL OR sha1 ~ '^[0-9a-f]{40}$');
-- The chroot tarball legacy builders build in, per arch series (in the artifact store by SHA-256).
ALTER TABLE distroarchseries ADD COLUMN chroot_name text;
ALTER TABLE distroarchseries ADD COLUMN chroot_sha256 text CHECK (chroot_sha256 IS NULL OR chroot_sha256 ~ '^[0-9a-f]{64}$');
ALTER TABLE distroarchseries ADD COLUMN chroot_sha1 text CHECK (chroot_sha1 IS NULL OR chroot_sha1 ~ '^[0-9a-f]{40}$');
ALTER TABLE distroarchseries ADD COLUMN chroot_size bigint CHECK (chroot_size IS NULL OR chroot_size >= 0);
