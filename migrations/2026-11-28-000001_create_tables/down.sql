DROP TABLE relay_partitions;
DROP TABLE rating_events;
DROP TABLE ratings;
DROP TABLE posts;
DROP TABLE users;
