"""The study index: reads and searches (selectors, query), deletion, thumbnails, zips and the
/studies/ pages."""
