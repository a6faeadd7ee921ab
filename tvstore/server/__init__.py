"""``tvstore serve``: one HTTP face in front of a registry's database and bucket, for a team."""
