"""Strings for the tokenizer tests: hand-written realistic text plus a seeded random part.

`CORPUS` is a list of unique strings. Keep additions realistic (chat turns, code, prose in many
scripts) or targeted at a tokenizer edge (whitespace runs, byte fallback, special-token text).
"""

import random

PROSE = [
    "Hello, world!",
    "hello world",
    "Hello World",
    "HELLO WORLD",
    "The quick brown fox jumps over the lazy dog.",
    "It's a dog's life, isn't it? We'll see; they'd say: \"no\".",
    "Gemma is a family of lightweight, state-of-the-art open models from Google.",
    "e.g. i.e. etc. Mr. Smith vs. Dr. Jones — the end…",
    "Ünïcödé àccents: café, naïve, résumé, Straße, øre, Łódź, İstanbul",
    "Le cœur a ses raisons que la raison ne connaît point.",
    "¿Dónde está la biblioteca? ¡Allí!",
    "Привет, мир! Как дела? Съешь же ещё этих мягких французских булок.",
    "Україна, Беларусь, Български език, Српски",
    "你好，世界！今天天气很好。",
    "机器学习是人工智能的一个分支。",
    "日本語のテキスト：こんにちは、カタカナ、ひらがな、漢字。",
    "한국어 텍스트입니다. 안녕하세요!",
    "مرحبا بالعالم! هذا نص عربي.",
    "السلام عليكم ورحمة الله",
    "שלום עולם, זה טקסט בעברית.",
    "नमस्ते दुनिया! यह हिंदी पाठ है।",
    "বাংলা ভাষা ১২৩৪৫ ২০২৩",
    "தமிழ் மொழி",
    "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "Γειά σου Κόσμε! Ελληνικά αλφάβητο αβγδε",
    "Tiếng Việt có dấu: Xin chào thế giới",
    "Türkçe: Ağaç, çiçek, şeker, ığdır",
    "ქართული ენა",
    "Հայերեն լեզու",
    "አማርኛ ቋንቋ",
    "ᠮᠣᠩᠭᠣᠯ ᠪᠢᠴᠢᠭ",
    "ꦧꦱꦗꦮ Javanese script",
    "Mixed: English, 中文, العربية, हिन्दी, русский in one line.",
    "math: ∀x ∈ ℝ, x² ≥ 0; ∑ᵢ aᵢ = ∫₀¹ f(t) dt ≈ π/4 ± ε",
    "currency: $100, €50, £30, ¥1000, ₹500, ₿0.01",
    "arrows → ← ↑ ↓ ⇒ ⇔ and box ┌─┐│└┘",
    "“smart quotes” and ‘single’ and «guillemets» and „German“",
    "zero\u200bwidth\u200cjoiner\u200dtest and soft\u00adhyphen",
    "non\u00a0breaking\u00a0spaces and\u2003em\u2002en\u2009thin",
    "combining: e\u0301 a\u0308 n\u0303 (decomposed) vs é ä ñ (composed)",
    "fullwidth ＡＢＣ１２３ and halfwidth ｶﾀｶﾅ",
    "ligatures ﬁ ﬂ ﬀ and roman numerals Ⅻ ⅷ",
]

EMOJI = [
    "🤖",
    "I ❤️ NumPy 🐍🔥",
    "👍🏽 thumbs up with skin tone",
    "👨‍👩‍👧‍👦 family ZWJ sequence",
    "🏳️‍🌈 rainbow flag, 🏴‍☠️ pirate flag",
    "🇺🇸🇯🇵🇩🇪 regional indicators",
    "🧑🏿‍💻 technologist, 👩‍❤️‍💋‍👨 kiss",
    "1️⃣ 2️⃣ #️⃣ keycaps",
    "😀😃😄😁😆😅😂🤣🥲☺️😊😇",
    "🫠🫨🪿🪼 newer emoji",
    "emoji at end 🎉",
    "🎉 emoji at start",
]

# Characters that are (probably) not in the vocabulary and need <0x..> byte fallback.
RARE = [
    "𓀀𓀁𓀂 hieroglyphs",
    "𒀀𒀁 cuneiform",
    "𐌰𐌱𐌲 Gothic",
    "\ue000\ue001 private use",
    "\U000f0000 supplementary private use",
    "\u0378 unassigned",
    "\U0010fffd",
    "control chars \x01\x02\x1b[31mred\x1b[0m \x7f",
    "bell\x07 and backspace\x08 and form feed\x0c and vertical tab\x0b",
    "\x00 NUL byte",
    "ᚠᚢᚦᚨᚱᚲ runes",
    "⠓⠑⠇⠇⠕ braille",
    "𝕳𝖊𝖑𝖑𝖔 𝓦𝓸𝓻𝓵𝓭 math alphanumerics",
    "\ufeffBOM at start",
    "\ufffd replacement char itself",
]

WHITESPACE = [
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\r\n",
    "\r",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "trailing spaces   ",
    "a b",
    "a  b",
    "a   b",
    "a    b",
    "a\tb",
    "a\t\tb",
    "a \tb",
    "a\t b",
    "line1\nline2",
    "line1\n\nline2",
    "line1\n\n\nline2",
    "line1\r\nline2\r\n",
    "mixed\r\n\n\r\rnewlines\n\r",
    "\n\n\n\n\n\n\n\n\n\n",
    "\n" * 40,
    " " * 31,
    " " * 32,
    " " * 33,
    " " * 64,
    "x" + " " * 40 + "y",
    "\t" * 31,
    "\t" * 35,
    " \n \n ",
    "\n \n\t\n",
    "word\n    indented\n        more\n    back\nout",
    "spaces before newline   \nand after\n   x",
    "tabs\tand\tspaces mixed \t \t here",
]

CODE = [
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "class Foo:\n    \"\"\"Docstring.\"\"\"\n\n    def __init__(self, x: int = 0) -> None:\n        self.x = x\n",
    "import numpy as np\n\nx = np.zeros((3, 4), dtype=np.float32)\nprint(x.shape)  # (3, 4)\n",
    "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(i)\n\telse:\n\t\tcontinue\n",
    "#include <stdio.h>\n\nint main(void) {\n    printf(\"Hello, %s!\\n\", \"world\");\n    return 0;\n}\n",
    "fn main() {\n    let v: Vec<i32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
    "function add(a, b) {\n  return a + b;\n}\nconst arrow = (x) => x ** 2;\nconsole.log(`sum: ${add(1, 2)}`);\n",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hi\")\n}\n",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name ASC LIMIT 10;",
    "<!DOCTYPE html>\n<html>\n  <body>\n    <div class=\"main\"><p>Hello</p></div>\n  </body>\n</html>",
    "<table><tr><th>Name</th><td>Value</td></tr></table>",
    "<h1>Title</h1><h2>Sub</h2><blockquote>quote</blockquote><strong>bold</strong><em>it</em>",
    "<code>x = 1</code> and <sub>2</sub> <sup>3</sup> <b>b</b> <i>i</i> <u>u</u> <s>s</s>",
    "<ul>\n  <li>one</li>\n  <li>two</li>\n</ul>",
    "<span>text</span><a>link</a><img><bbox>0 0 10 10</bbox><iframe></iframe><footer>f</footer>",
    "{\n  \"name\": \"minigemma\",\n  \"version\": [0, 1, 0],\n  \"ok\": true,\n  \"none\": null\n}",
    "key: value\nlist:\n  - a\n  - b\nnested:\n    deep: 1\n",
    "$ ls -la | grep '.py' && echo \"done\" > /dev/null 2>&1",
    "x = [i**2 for i in range(100) if i % 3 == 0]; y = {k: v for k, v in zip(a, b)}",
    "if (a && b || !c) { return a != b ? a : c; } // comment\n/* block\n   comment */",
    "\\begin{equation}\n  E = mc^2 \\quad \\frac{a}{b}\n\\end{equation}",
    "regex: ^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\\.[a-zA-Z]{2,}$",
    "URL: https://www.example.com/path/to/page?query=1&other=two#anchor",
    "email me at someone@example.org or call +1 (555) 123-4567",
    "    indented by four\n        by eight\n            by twelve\n                by sixteen",
    "\tone tab\n\t\ttwo tabs\n\t\t\tthree tabs",
    "  mixed  \t  indentation\t\t  here",
    "| col1 | col2 |\n|------|------|\n| a    | b    |",
    "```python\nprint('hi')\n```",
    "# Heading\n\n* bullet **bold** _italic_ `code`\n\n1. first\n2. second",
    "snake_case camelCase PascalCase SCREAMING_CASE kebab-case",
    "__init__ __main__ __name__ == '__main__'",
    "a->b a=>b a<=b a>=b a!=b a==b a===b a<<b a>>b a**b a//b",
]

NUMBERS = [
    "0",
    "7",
    "42",
    "123",
    "1234",
    "12345678901234567890",
    "3.14159265358979323846",
    "-273.15",
    "1e-10 6.022e23 0x1F 0b1010 0o777",
    "1,000,000 and 1.000.000 and 1 000 000",
    "2024-01-15T13:45:30Z",
    "Call 911 or 112; room 221B; year 1999; 3rd, 21st, 100th",
    "v1.2.3-rc.4+build.567",
    "٠١٢٣٤٥٦٧٨٩ Arabic-Indic digits",
    "१२३ Devanagari digits",
    "½ ¾ ⅓ ² ³ ① ② ③",
    "π ≈ 3.14, e ≈ 2.718",
    "99 bottles of beer on the wall, 99 bottles of beer.",
]

SPECIAL_TEXT = [
    "<start_of_turn>user\n",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_turn>model\n4<end_of_turn>",
    "<bos>",
    "<eos>",
    "<pad>",
    "<unk>",
    "<mask>",
    "<bos>hello<eos>",
    "<unused0><unused1><unused99>",
    "<start_of_image>",
    "<end_of_image>",
    "before <start_of_image> after",
    "[multimodal]",
    "<start_of_turn",
    "start_of_turn>",
    "<<start_of_turn>>",
    "<end_of_turn><end_of_turn>",
    "text<end_of_turn>\ntext",
    "<start_of_turn> user",
    " <end_of_turn> ",
    "<s></s>",
    "<unknown_tag>",
    "<Start_Of_Turn>",
]

EDGE = [
    "",
    "a",
    "A",
    "z",
    ".",
    ",",
    "!",
    "?",
    "'",
    '"',
    "-",
    "_",
    "<",
    ">",
    "\\",
    "/",
    "é",
    "中",
    "ا",
    "😀",
    "▁",
    "▁▁ literal lower one eighth blocks",
    "a▁b",
    "x" * 100,
    "ab" * 50,
    "the " * 30,
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "!!!???...,,,;;;:::",
    "----------------------------------------",
    "================================",
    "****",
    "~~~",
    "....",
    "Supercalifragilisticexpialidocious",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "antidisestablishmentarianism",
]

# Pools for the seeded random strings: realistic fragments and single characters that stress
# whitespace handling, scripts and byte fallback.
_FRAGMENTS = [
    "the", " the", "Gemma", "token", "izer", "ing", " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n",
    "123", "4567", ".", ",", "!", "?", "'s", "(", ")", "{", "}", "[", "]", "<b>", "</b>", "<div>",
    "<start_of_turn>", "<end_of_turn>", "<bos>", "user", "model", "def ", "return ", "    ", "😀",
    "👨‍💻", "🇫🇷", "中文", "日本", "한국", "العربية", "हिंदी", "русский", "ไทย", "עברית", "é", "ß",
    "𓀀", "\ue000", "\x00", "\x1b", "▁", "ǅ", "ﬁ", "Ⅻ", "\u200d", "\u00a0", "\u3000", "ー",
]
_CHAR_RANGES = [
    (0x20, 0x7E), (0xA0, 0x17F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF), (0x600, 0x6FF),
    (0x900, 0x97F), (0xE00, 0xE7F), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
    (0x1F300, 0x1FAFF), (0x10000, 0x1342F), (0x2000, 0x2BFF), (0xE000, 0xF8FF),
]


def _random_strings(count: int, seed: int = 1234) -> list[str]:
    rng = random.Random(seed)
    out = []
    for k in range(count):
        parts = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.6:
                parts.append(rng.choice(_FRAGMENTS))
            else:
                lo, hi = rng.choice(_CHAR_RANGES)
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 4))))
        out.append("".join(parts))
    return out


def _whitespace_runs() -> list[str]:
    """Every run length of spaces / newlines / tabs up to past the longest user-defined piece."""
    runs = []
    for n in (1, 2, 3, 4, 5, 8, 15, 16, 17, 30, 31, 32, 33, 40, 62, 63, 70):
        runs += [f"x{' ' * n}y", f"x{chr(10) * n}y", f"x{chr(9) * n}y", " " * n + "def f():"]
    return runs


def _unique(strings):
    seen, out = set(), []
    for s in strings:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


HAND_WRITTEN = _unique(PROSE + EMOJI + RARE + WHITESPACE + CODE + NUMBERS + SPECIAL_TEXT + EDGE)
CORPUS = _unique(HAND_WRITTEN + _whitespace_runs() + _random_strings(150))

# Strings whose decode(encode(s)) is not s: SentencePiece writes a space as "▁" (U+2581), so a
# literal "▁" in the text comes back as a space (HF and llama.cpp do the same).
NOT_ROUND_TRIPPING = [s for s in CORPUS if "\u2581" in s]
