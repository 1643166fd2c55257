"""Where a profile file's JSON is broken: line, column and reason, on CPython and MicroPython.

CPython's JSONDecodeError carries the position; MicroPython's json only says "syntax error",
so this re-reads the text with a small checker. Used only after a parse has failed.
"""


def describe(path, exc):
    """ "invalid JSON at line L, column C: reason" for the parse error exc of file path."""
    if getattr(exc, "lineno", None) is not None:
        return "invalid JSON at line %d, column %d: %s" % (exc.lineno, exc.colno, exc.msg)
    try:
        with open(path) as f:
            text = f.read()
        pos, reason = locate(text)
    except Exception:  # the position is a courtesy: fall back to the parser's own words
        return "invalid JSON: %s" % (exc,)
    line = text.count("\n", 0, pos) + 1
    col = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return "invalid JSON at line %d, column %d: %s" % (line, col, reason)


class _Bad(Exception):
    pass


def locate(text):
    """(offset, reason) of the first syntax error in JSON text, or (len(text), "") if none."""
    c = _Checker(text)
    try:
        c.ws()
        c.value()
        c.ws()
        if c.i < len(text):
            c.fail("Extra data")
    except _Bad as e:
        return e.args[0], e.args[1]
    return len(text), ""


class _Checker:
    def __init__(self, text):
        self.s = text
        self.i = 0

    def fail(self, reason):
        raise _Bad(self.i, reason)

    def ws(self):
        s = self.s
        while self.i < len(s) and s[self.i] in " \t\r\n":
            self.i += 1

    def peek(self):
        return self.s[self.i] if self.i < len(self.s) else ""

    def value(self):
        c = self.peek()
        if c == "{" or c == "[":
            self.container("}" if c == "{" else "]", c == "{")
        elif c == '"':
            self.string()
        elif c == "-" or "0" <= c <= "9":
            self.number()
        else:
            for word in ("true", "false", "null"):
                if self.s.startswith(word, self.i):
                    self.i += len(word)
                    return
            self.fail("Expecting value")

    def digits(self, at):
        """Index after the run of digits starting at `at`."""
        s = self.s
        while at < len(s) and "0" <= s[at] <= "9":
            at += 1
        return at

    def number(self):
        # JSON's grammar, -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, taken greedily the way
        # CPython's scanner does: an incomplete fraction or exponent is left for the caller.
        s = self.s
        i = self.i + 1 if s[self.i] == "-" else self.i
        if i >= len(s) or not "0" <= s[i] <= "9":
            self.fail("Expecting value")
        i = i + 1 if s[i] == "0" else self.digits(i)
        if i + 1 < len(s) and s[i] == "." and "0" <= s[i + 1] <= "9":
            i = self.digits(i + 1)
        if i < len(s) and s[i] in "eE":
            j = i + 1
            if j < len(s) and s[j] in "+-":
                j += 1
            if j < len(s) and "0" <= s[j] <= "9":
                i = self.digits(j)
        self.i = i

    def container(self, close, is_object):
        self.i += 1
        self.ws()
        if self.peek() == close:
            self.i += 1
            return
        while True:
            if is_object:
                if self.peek() != '"':
                    self.fail("Expecting property name enclosed in double quotes")
                self.string()
                self.ws()
                if self.peek() != ":":
                    self.fail("Expecting ':' delimiter")
                self.i += 1
                self.ws()
            self.value()
            self.ws()
            c = self.peek()
            if c == close:
                self.i += 1
                return
            if c != ",":
                self.fail("Expecting ',' delimiter")
            self.i += 1
            self.ws()
            if self.peek() == close:
                self.fail("Illegal trailing comma before end of container")

    def string(self):
        start = self.i
        self.i += 1
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c == '"':
                self.i += 1
                return
            if c == "\\":
                self.i += 1
            elif c < " ":
                self.fail("Invalid control character in string")
            self.i += 1
        self.i = start
        self.fail("Unterminated string starting")
