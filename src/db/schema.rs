// @generated automatically by Diesel CLI.

diesel::table! {
    posts (id) {
        id -> Int8,
        title -> Text,
        content -> Text,
        created_by -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    post_versions (post_id) {
        post_id -> Int8,
        version -> Int8,
    }
}

diesel::table! {
    rating_events (id) {
        id -> Int8,
        post_id -> Int8,
        d_count -> Int2,
        d_score_sum -> Int4,
        bucket_out -> Nullable<Int2>,
        bucket_in -> Nullable<Int2>,
        d_weight_sum -> Int4,
        d_weighted_sum -> Int4,
        created_at -> Timestamptz,
        user_id -> Nullable<Int8>,
        score -> Nullable<Int2>,
        prev_score -> Nullable<Int2>,
        weight -> Nullable<Int4>,
        prev_weight -> Nullable<Int4>,
    }
}

diesel::table! {
    ratings (post_id, user_id) {
        post_id -> Int8,
        user_id -> Int8,
        score -> Int2,
        weight -> Int4,
        prev_score -> Nullable<Int2>,
        prev_weight -> Nullable<Int4>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    relay_batches (id) {
        id -> Int8,
        events -> Int4,
        payload -> Bytea,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    relay_partitions (part) {
        part -> Int4,
        last_seq -> Int8,
    }
}

diesel::table! {
    users (id) {
        id -> Int8,
        username -> Text,
        password_hash -> Text,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(posts -> users (created_by));
diesel::joinable!(ratings -> posts (post_id));
diesel::joinable!(ratings -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    post_versions,
    posts,
    rating_events,
    ratings,
    relay_batches,
    relay_partitions,
    users,
);
