DROP TABLE post_versions;
