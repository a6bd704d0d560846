# attune build. `make` builds everything into build/; see README.md for the targets.
# Dependencies come through pkg-config; packaging/deps.sh installs missing ones with apt-get
# and writes their flags to $(BUILD)/config.mk, which this Makefile includes.

BUILD   ?= build
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
DATADIR ?= $(PREFIX)/share/attune
MANDIR  ?= $(PREFIX)/share/man
SYSCONFDIR ?= $(PREFIX)/etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
CC      ?= cc
PYTHON  ?= /usr/bin/python3

WARN    = -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
CFLAGS  ?= -O2 -g
ALL_CFLAGS = -std=c11 $(CFLAGS) $(WARN) $(WERROR) -MMD -MP -D_GNU_SOURCE \
             -Ilib/include -Ilib -Icommon $(EXTRA_CFLAGS)
LDFLAGS ?=
ALL_LDFLAGS = $(LDFLAGS) $(EXTRA_LDFLAGS)

# `make` alone builds everything (the config.mk rule below would otherwise come first).
.DEFAULT_GOAL := all
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
COMMON_SRC = $(wildcard common/*.c)
COMMON_OBJ = $(COMMON_SRC:%.c=$(BUILD)/%.o)
# cli/ext_sqlite.c is the SQLite loadable extension, not part of the attune command.
EXT_SRC   = cli/ext_sqlite.c
EXT_OBJ   = $(BUILD)/cli/ext_sqlite.o $(BUILD)/cli/output.o
CLI_SRC   = $(filter-out $(EXT_SRC),$(wildcard cli/*.c))
CLI_OBJ   = $(CLI_SRC:%.c=$(BUILD)/%.o)
UNIT_SRC  = $(wildcard tests/unit/test_*.c)
UNIT_BIN  = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
DAEMON_SRC = $(wildcard daemon/*.c)
DAEMON_OBJ = $(DAEMON_SRC:%.c=$(BUILD)/%.o) $(BUILD)/schema_sql.o
SCHEMA_SQL = $(sort $(wildcard schema/[0-9][0-9][0-9][0-9]_*.sql))
BENCH_SRC = $(wildcard bench/*.c)
BENCH_BIN = $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

LIB_LIBS  = $(PCRE2_8_LIBS) -lm

.PHONY: all test check asan tsan fuzz fuzz-build bench eval install clean run unit cases integration demo
all: $(BUILD)/libattune.a $(BUILD)/attune $(BUILD)/attuned $(BUILD)/attune_sqlite.so $(BENCH_BIN)

$(BUILD)/%.o: %.c $(BUILD)/config.mk
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Idaemon -I$(BUILD) $(PCRE2_8_CFLAGS) $(JANSSON_CFLAGS) $(SQLITE3_CFLAGS) $(CMOCKA_CFLAGS) -c $< -o $@

# The installed commands find the installed lexicons: lib/model.c falls back to
# ATTUNE_DATADIR/lexicons. A stamp that changes only with DATADIR rebuilds model.o when it does.
$(BUILD)/lib/model.o: ALL_CFLAGS += -DATTUNE_DATADIR='"$(DATADIR)"'
$(BUILD)/lib/model.o: $(BUILD)/datadir.stamp
$(BUILD)/datadir.stamp: FORCE
	@mkdir -p $(dir $@)
	@echo '$(DATADIR)' | cmp -s - $@ || echo '$(DATADIR)' > $@
.PHONY: FORCE

# libattune is position-independent so that the SQLite extension, a shared object, can link it.
$(LIB_OBJ) $(EXT_OBJ): ALL_CFLAGS += -fPIC
$(EXT_OBJ): ALL_CFLAGS += -fvisibility=hidden

$(BUILD)/libattune.a: $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

# common/: code attuned and attune share beyond lib (SQLite: the writer lock, scores, metrics).
$(BUILD)/common/%.o: common/%.c $(BUILD)/config.mk
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(SQLITE3_CFLAGS) -c $< -o $@

$(BUILD)/libcommon.a: $(COMMON_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

# `attune rescore` writes what attuned writes, so it links the shared scoring and metrics code
# and the embedded migrations (to refuse a database newer than it knows).
$(BUILD)/attune: $(CLI_OBJ) $(BUILD)/schema_sql.o $(BUILD)/libcommon.a $(BUILD)/libattune.a
	$(CC) $(ALL_CFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/schema_sql.o $(BUILD)/libcommon.a $(BUILD)/libattune.a $(JANSSON_LIBS) $(SQLITE3_LIBS) $(LIB_LIBS) $(ALL_LDFLAGS)

# The SQLite loadable extension (`.load build/attune_sqlite`): scoring and statistics functions.
# libattune's symbols stay inside it, and none may be left undefined (-z defs): SQLite's own
# functions come through the API table it hands the extension, not through the linker.
$(BUILD)/attune_sqlite.so: $(EXT_OBJ) $(BUILD)/libattune.a
	$(CC) $(ALL_CFLAGS) -shared -o $@ $(EXT_OBJ) $(BUILD)/libattune.a -Wl,--exclude-libs,ALL -Wl,-z,defs $(LIB_LIBS) $(ALL_LDFLAGS)

# The migrations are compiled into the daemon so that a binary always knows its own schema.
$(BUILD)/schema_sql.c: $(SCHEMA_SQL) packaging/embed_schema.sh
	@mkdir -p $(dir $@)
	packaging/embed_schema.sh $(SCHEMA_SQL) > $@.tmp && mv $@.tmp $@

$(BUILD)/schema_sql.o: $(BUILD)/schema_sql.c
	$(CC) $(ALL_CFLAGS) -Idaemon -c $< -o $@

$(BUILD)/daemon/%.o: daemon/%.c $(BUILD)/config.mk
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Idaemon $(UV_CFLAGS) $(JANSSON_CFLAGS) $(SQLITE3_CFLAGS) $(INIH_CFLAGS) $(SYSTEMD_CFLAGS) -c $< -o $@

$(BUILD)/attuned: $(DAEMON_OBJ) $(BUILD)/libcommon.a $(BUILD)/libattune.a
	$(CC) $(ALL_CFLAGS) -o $@ $(DAEMON_OBJ) $(BUILD)/libcommon.a $(BUILD)/libattune.a $(UV_LIBS) $(JANSSON_LIBS) $(SQLITE3_LIBS) $(INIH_LIBS) $(SYSTEMD_LIBS) -lhttp_parser $(LIB_LIBS) -lpthread $(ALL_LDFLAGS)

run: all
	$(BUILD)/attuned --listen 127.0.0.1:7420 --db ./attune.db

# Unit tests of daemon modules include their sources and the generated schema.
$(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%.o): $(BUILD)/schema_sql.c

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libcommon.a $(BUILD)/libattune.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libcommon.a $(BUILD)/libattune.a $(CMOCKA_LIBS) $(JANSSON_LIBS) $(SQLITE3_LIBS) $(INIH_LIBS) $(UV_LIBS) $(LIB_LIBS) -lpthread $(ALL_LDFLAGS)

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

# In its own build directory, so that every object is compiled with -Werror (objects left in
# build/ by a plain make would not be rebuilt, and their warnings would go unseen).
check:
	$(MAKE) BUILD=build-check WERROR=-Werror test

asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g" \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" WERROR=-Werror test

# ThreadSanitizer: the whole suite, in its own build directory. A race report makes attuned
# exit 66 instead of 0, which fails the test that stopped it.
tsan:
	$(MAKE) BUILD=build-tsan CFLAGS="-O1 -g" \
	  EXTRA_CFLAGS="-fsanitize=thread -fno-omit-frame-pointer" EXTRA_LDFLAGS="-fsanitize=thread" \
	  WERROR=-Werror test

# libFuzzer targets (tests/fuzz/fuzz_<name>.c) built with clang, ASan and UBSan into
# build-fuzz/, each run for FUZZ_SECONDS from its seed corpus tests/fuzz/corpus/<name>/. New
# inputs go to build-fuzz/corpus/<name>/, a crashing input to build-fuzz/crashes/ (rerun it
# with build-fuzz/fuzz_<name> FILE).
FUZZ_TARGETS = framer wire score redact
FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FUZZ_BIN = $(FUZZ_TARGETS:%=$(BUILD)/fuzz_%)
FUZZ_OBJ = $(FUZZ_TARGETS:%=$(BUILD)/tests/fuzz/fuzz_%.o)

fuzz:
	@# ATTUNE_DEPS_FUZZ: packaging/deps.sh also installs clang and its runtimes when missing.
	ATTUNE_DEPS_FUZZ=1 $(MAKE) BUILD=build-fuzz CC=$(FUZZ_CC) CFLAGS="-O1 -g" \
	  EXTRA_CFLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  EXTRA_LDFLAGS="-fsanitize=address,undefined" fuzz-build
	@set -e; mkdir -p build-fuzz/crashes; for t in $(FUZZ_TARGETS); do \
	  mkdir -p build-fuzz/corpus/$$t; \
	  echo "== fuzz_$$t for $(FUZZ_SECONDS) s (log: build-fuzz/fuzz_$$t.log)"; \
	  if ! ATTUNE_LEXICONS=lexicons build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) \
	      -timeout=10 -print_final_stats=1 -artifact_prefix=build-fuzz/crashes/$$t- \
	      build-fuzz/corpus/$$t tests/fuzz/corpus/$$t > build-fuzz/fuzz_$$t.log 2>&1; then \
	    tail -n 60 build-fuzz/fuzz_$$t.log; exit 1; fi; \
	  grep -E "^(Done|stat::number_of_executed_units|stat::new_units_added)" build-fuzz/fuzz_$$t.log; \
	done

fuzz-build: $(FUZZ_BIN)

$(FUZZ_OBJ): $(BUILD)/tests/fuzz/%.o: tests/fuzz/%.c $(BUILD)/config.mk
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Idaemon $(PCRE2_8_CFLAGS) $(JANSSON_CFLAGS) -c $< -o $@

$(BUILD)/fuzz_framer: $(BUILD)/daemon/framer.o
$(BUILD)/fuzz_wire: $(BUILD)/daemon/wire.o $(BUILD)/common/timeparse.o
$(FUZZ_BIN): $(BUILD)/fuzz_%: $(BUILD)/tests/fuzz/fuzz_%.o $(BUILD)/libattune.a
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer -o $@ $(filter %.o,$^) $(BUILD)/libattune.a $(JANSSON_LIBS) $(LIB_LIBS) $(ALL_LDFLAGS)

eval: $(BUILD)/attune
	$(BUILD)/attune eval tests/fixtures/markers/dev.jsonl

# A fresh attuned, 10,000 generated conversations streamed in, every report printed.
demo: all
	BUILD=$(BUILD) bench/demo.sh

bench: all
	BUILD=$(BUILD) bench/run.sh

# Paths in the unit file and the man pages are written for /usr/local; install rewrites them.
# An existing $(SYSCONFDIR)/attune/attuned.ini is the operator's and is never overwritten.
INSTALL_PATHS = sed -e 's|/usr/local/etc|$(SYSCONFDIR)|g' -e 's|/usr/local|$(PREFIX)|g'

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DATADIR)/lexicons $(DESTDIR)$(DATADIR)/schema \
	  $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(SYSCONFDIR)/attune \
	  $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR)
	install -m 755 $(BUILD)/attune $(DESTDIR)$(BINDIR)/attune
	install -m 755 $(BUILD)/attuned $(DESTDIR)$(BINDIR)/attuned
	install -d $(DESTDIR)$(LIBDIR)/attune
	install -m 755 $(BUILD)/attune_sqlite.so $(DESTDIR)$(LIBDIR)/attune/attune_sqlite.so
	cp -R lexicons/. $(DESTDIR)$(DATADIR)/lexicons/
	chmod -R u=rwX,go=rX $(DESTDIR)$(DATADIR)/lexicons
	install -m 644 schema/*.sql schema/README.md $(DESTDIR)$(DATADIR)/schema/
	install -m 644 config.example.ini $(DESTDIR)$(DATADIR)/config.example.ini
	[ -e $(DESTDIR)$(SYSCONFDIR)/attune/attuned.ini ] || \
	  install -m 644 config.example.ini $(DESTDIR)$(SYSCONFDIR)/attune/attuned.ini
	$(INSTALL_PATHS) packaging/attuned.service > $(DESTDIR)$(UNITDIR)/attuned.service
	chmod 644 $(DESTDIR)$(UNITDIR)/attuned.service
	install -m 644 packaging/attune.sysusers $(DESTDIR)$(SYSUSERSDIR)/attune.conf
	$(INSTALL_PATHS) packaging/man/attune.1 > $(DESTDIR)$(MANDIR)/man1/attune.1
	$(INSTALL_PATHS) packaging/man/attuned.8 > $(DESTDIR)$(MANDIR)/man8/attuned.8
	chmod 644 $(DESTDIR)$(MANDIR)/man1/attune.1 $(DESTDIR)$(MANDIR)/man8/attuned.8

clean:
	rm -rf build build-check build-asan build-tsan build-fuzz

-include $(LIB_OBJ:.o=.d) $(COMMON_OBJ:.o=.d) $(EXT_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(DAEMON_SRC:%.c=$(BUILD)/%.d) $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/unit/%.d) $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%.d) $(FUZZ_OBJ:.o=.d)
