//! The JSON of posts as the read endpoints send it, written without a tree of values: the
//! fields a post never changes (its text and author) are serialised once, when the post enters
//! the page cache, and each response appends only the stats and the caller's own score.
//! The bytes are exactly those of serialising [`Post`] with serde (a test checks it), so the
//! OpenAPI schema of `Post` stays the contract.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::posts::Author;
use crate::db::posts::PostRow;
use crate::stats::{PostStats, PublicStats};

/// A post as stored: its id and date (for cursors) and its JSON object up to its stats.
#[derive(Debug)]
pub struct StoredPost {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    /// `{"id":…,"title":…,"content":…,"created_by":{…},"created_at":"…"`, without the
    /// closing brace.
    head: Box<str>,
}

/// The fields of [`Post`] that never change, in its order.
#[derive(Serialize)]
struct Head<'a> {
    id: i64,
    title: &'a str,
    content: &'a str,
    created_by: Author,
    created_at: DateTime<Utc>,
}

/// The fields of [`Post`] after [`Head`], in its order.
#[derive(Serialize)]
struct Tail {
    rating_count: Option<i64>,
    average_rating: Option<f64>,
    raw_average_rating: Option<f64>,
    rating_histogram: Option<[i64; 6]>,
    user_rating: Option<i16>,
}

impl StoredPost {
    pub fn new(row: PostRow) -> Self {
        let head = Head {
            id: row.id,
            title: &row.title,
            content: &row.content,
            created_by: Author {
                id: row.author_id,
                username: row.author_username,
            },
            created_at: row.created_at,
        };
        let mut json = serde_json::to_string(&head).expect("a post serialises");
        json.pop(); // the closing brace
        StoredPost {
            id: row.id,
            created_at: row.created_at,
            head: json.into_boxed_str(),
        }
    }

    /// Bytes this post holds, for the cache's weight.
    pub fn size(&self) -> usize {
        self.head.len() + std::mem::size_of::<Self>()
    }

    /// Appends the post's JSON object with these stats (`None`: shown as nulls) and score.
    pub fn write(&self, out: &mut Vec<u8>, stats: Option<&PostStats>, user_rating: Option<i16>) {
        let public = stats.map(PublicStats::from);
        let tail = Tail {
            rating_count: public.map(|p| p.rating_count),
            average_rating: public.and_then(|p| p.average_rating),
            raw_average_rating: public.and_then(|p| p.raw_average_rating),
            rating_histogram: public.map(|p| p.rating_histogram),
            user_rating,
        };
        out.extend_from_slice(self.head.as_bytes());
        let at = out.len();
        serde_json::to_writer(&mut *out, &tail).expect("numbers serialise");
        // The tail's own opening brace becomes the comma after the head.
        out[at] = b',';
    }
}

/// `{"results":[…],"next_cursor":…}`, the page body, from its posts already written by `each`.
pub fn page<I>(
    posts: I,
    next_cursor: Option<&str>,
    mut each: impl FnMut(&mut Vec<u8>, I::Item),
) -> Vec<u8>
where
    I: ExactSizeIterator,
{
    let mut out = Vec::with_capacity(256 + posts.len() * 512);
    out.extend_from_slice(b"{\"results\":[");
    for (n, post) in posts.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        each(&mut out, post);
    }
    out.extend_from_slice(b"],\"next_cursor\":");
    serde_json::to_writer(&mut out, &next_cursor).expect("a string serialises");
    out.push(b'}');
    out
}

/// The body of one post.
pub fn post(stored: &StoredPost, stats: Option<&PostStats>, user_rating: Option<i16>) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored.head.len() + 160);
    stored.write(&mut out, stats, user_rating);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::posts::Post;

    fn row() -> PostRow {
        PostRow {
            id: 42,
            title: "A \"quoted\" title\n".into(),
            content: "ünïcödé \u{1} and </script>".into(),
            author_id: 7,
            author_username: "ann".into(),
            created_at: "2026-11-30T08:00:00.123456Z".parse().unwrap(),
        }
    }

    fn serde_post(stats: Option<&PostStats>, user_rating: Option<i16>) -> serde_json::Value {
        serde_json::to_value(Post::new(row(), stats, user_rating)).unwrap()
    }

    #[test]
    fn the_bytes_are_those_of_the_post_schema() {
        let stored = StoredPost::new(row());
        let stats = PostStats {
            count: 3,
            score_sum: 11,
            hist: [0, 0, 0, 1, 1, 1],
            weight_sum: 2500,
            weighted_sum: 9100,
        };
        for (stats, mine) in [
            (Some(&stats), Some(4)),
            (Some(&PostStats::default()), None),
            (None, Some(0)),
        ] {
            let bytes = post(&stored, stats, mine);
            let ours: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(ours, serde_post(stats, mine));
            // Same bytes too, field order included.
            assert_eq!(
                String::from_utf8(bytes).unwrap(),
                serde_json::to_string(&Post::new(row(), stats, mine)).unwrap()
            );
        }
    }

    #[test]
    fn a_page_is_its_posts_and_cursor() {
        let stored = [StoredPost::new(row()), StoredPost::new(row())];
        let body = page(stored.iter(), Some("abc"), |out, p| {
            p.write(out, None, None)
        });
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["results"].as_array().unwrap().len(), 2);
        assert_eq!(v["results"][1], serde_post(None, None));
        assert_eq!(v["next_cursor"], "abc");
        let empty = page(stored[..0].iter(), None, |out, p| p.write(out, None, None));
        assert_eq!(empty, br#"{"results":[],"next_cursor":null}"#);
    }
}
