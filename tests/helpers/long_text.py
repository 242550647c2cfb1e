"""A prompt of ~700 tokens, longer than Gemma 3 270M's 512-token window, for the real-model tests."""

LONG_TEXT = " ".join(
    f"Chapter {i}: the river bends past the {w} mill, where {n} workers once ground wheat "
    f"into flour for the town of {t}."
    for i, (w, n, t) in enumerate(zip(
        ["old", "red", "stone", "wind", "water", "north", "south", "east", "west", "broken",
         "quiet", "busy", "new", "grey", "tall", "small", "lost", "last", "first", "second"] * 2,
        range(3, 200, 5),
        ["Arden", "Brill", "Cove", "Dunmore", "Elton", "Fray", "Gale", "Holt", "Ives", "Jarrow"] * 4)))
