"""`embedpipe report RUN.json`: one self-contained HTML page of a run report (`html`) with its
inline SVG charts (`svg`)."""
