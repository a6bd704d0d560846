# attune build. `make` builds everything into build/; see README.md for the targets.
# Dependencies come through pkg-config; packaging/deps.sh installs missing ones with apt-get
# and writes their flags to $(BUILD)/config.mk, which this Makefile includes.

BUILD   ?= build
PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
PYTHON  ?= /usr/bin/python3

WARN    = -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
CFLAGS  ?= -O2 -g
ALL_CFLAGS = -std=c11 $(CFLAGS) $(WARN) $(WERROR) -MMD -MP -D_GNU_SOURCE \
             -Ilib/include -Ilib $(EXTRA_CFLAGS)
LDFLAGS ?=
ALL_LDFLAGS = $(LDFLAGS) $(EXTRA_LDFLAGS)

NO_DEPS_GOALS = clean distclean
ifeq ($(filter-out $(NO_DEPS_GOALS),$(or $(MAKECMDGOALS),all)),)
else
include $(BUILD)/config.mk
endif

$(BUILD)/config.mk: packaging/deps.sh
	@mkdir -p $(BUILD)
	packaging/deps.sh > $@.tmp
	@mv $@.tmp $@

LIB_SRC   = $(wildcard lib/*.c)
LIB_OBJ   = $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_SRC   = $(wildcard cli/*.c)
CLI_OBJ   = $(CLI_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC  = $(wildcard tests/unit/test_*.c)
UNIT_BIN  = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
DAEMON_SRC = $(wildcard daemon/*.c)
DAEMON_OBJ = $(DAEMON_SRC:%.c=$(BUILD)/%.o) $(BUILD)/schema_sql.o
SCHEMA_SQL = $(sort $(wildcard schema/[0-9][0-9][0-9][0-9]_*.sql))
BENCH_SRC = $(wildcard bench/*.c)
BENCH_BIN = $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

LIB_LIBS  = $(PCRE2_8_LIBS) -lm

.PHONY: all test check asan bench eval install clean run unit cases integration
all: $(BUILD)/libattune.a $(BUILD)/attune $(BUILD)/attuned $(BENCH_BIN)

$(BUILD)/%.o: %.c $(BUILD)/config.mk
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Idaemon -I$(BUILD) $(PCRE2_8_CFLAGS) $(JANSSON_CFLAGS) $(CMOCKA_CFLAGS) -c $< -o $@

$(BUILD)/libattune.a: $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/attune: $(CLI_OBJ) $(BUILD)/libattune.a
	$(CC) $(ALL_CFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libattune.a $(JANSSON_LIBS) $(LIB_LIBS) $(ALL_LDFLAGS)

# The migrations are compiled into the daemon so that a binary always knows its own schema.
$(BUILD)/schema_sql.c: $(SCHEMA_SQL) packaging/embed_schema.sh
	@mkdir -p $(dir $@)
	packaging/embed_schema.sh $(SCHEMA_SQL) > $@.tmp && mv $@.tmp $@

$(BUILD)/schema_sql.o: $(BUILD)/schema_sql.c
	$(CC) $(ALL_CFLAGS) -Idaemon -c $< -o $@

$(BUILD)/daemon/%.o: daemon/%.c $(BUILD)/config.mk
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Idaemon $(UV_CFLAGS) $(JANSSON_CFLAGS) $(SQLITE3_CFLAGS) $(INIH_CFLAGS) $(SYSTEMD_CFLAGS) -c $< -o $@

$(BUILD)/attuned: $(DAEMON_OBJ) $(BUILD)/libattune.a
	$(CC) $(ALL_CFLAGS) -o $@ $(DAEMON_OBJ) $(BUILD)/libattune.a $(UV_LIBS) $(JANSSON_LIBS) $(SQLITE3_LIBS) $(INIH_LIBS) $(SYSTEMD_LIBS) -lhttp_parser $(LIB_LIBS) -lpthread $(ALL_LDFLAGS)

run: all
	$(BUILD)/attuned --listen 127.0.0.1:7420 --db ./attune.db

# Unit tests of daemon modules include their sources and the generated schema.
$(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%.o): $(BUILD)/schema_sql.c

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libattune.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libattune.a $(CMOCKA_LIBS) $(JANSSON_LIBS) $(SQLITE3_LIBS) $(INIH_LIBS) $(UV_LIBS) $(LIB_LIBS) -lpthread $(ALL_LDFLAGS)

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(BUILD)/libattune.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libattune.a $(JANSSON_LIBS) $(LIB_LIBS) $(ALL_LDFLAGS)

# Tests: C unit tests (cmocka, lib only), then the data-driven and integration tests (pytest,
# driving the real binaries).
unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; ATTUNE_LEXICONS=lexicons $$t; done

integration: all
	ATTUNE_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q tests/integration

test: all unit integration

check:
	$(MAKE) WERROR=-Werror all $(UNIT_BIN)
	$(MAKE) WERROR=-Werror test

asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g" \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" WERROR=-Werror test

eval: $(BUILD)/attune
	$(BUILD)/attune eval tests/fixtures/markers/dev.jsonl

bench: all
	BUILD=$(BUILD) bench/run.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/attune/lexicons
	install -m 755 $(BUILD)/attune $(DESTDIR)$(PREFIX)/bin/attune
	install -m 755 $(BUILD)/attuned $(DESTDIR)$(PREFIX)/bin/attuned
	cp -R lexicons/. $(DESTDIR)$(PREFIX)/share/attune/lexicons/

clean:
	rm -rf build build-asan

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(DAEMON_SRC:%.c=$(BUILD)/%.d) $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%.d) $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%.d)
